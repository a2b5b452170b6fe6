// Makes <name>/expected-ids.json: the ids (no special tokens added) and decodings that Hugging Face's own
// JavaScript tokenizers give for fixture-strings.json (decoded as the Rust crate decodes: without transformers'
// clean_up_tokenization_spaces). Run once, commit the output; the tests need no node:
//   npm install @huggingface/tokenizers@0.2.0 && node make-fixture.mjs qwen3 llama3 mistral-7b-v0.1 mistral-7b-v0.1-metaspace yi
import { readFileSync, writeFileSync, existsSync } from "node:fs";
import { Tokenizer } from "@huggingface/tokenizers";

const here = new URL(".", import.meta.url).pathname;
const strings = JSON.parse(readFileSync(here + "fixture-strings.json", "utf8"));
for (const name of process.argv.slice(2)) {
  const json = JSON.parse(readFileSync(`${here}${name}/tokenizer.json`, "utf8"));
  const configPath = `${here}${name}/tokenizer_config.json`;
  const config = existsSync(configPath) ? JSON.parse(readFileSync(configPath, "utf8")) : {};
  const tokenizer = new Tokenizer(json, config);
  const cases = strings.map(text => {
    const ids = tokenizer.encode(text, { add_special_tokens: false }).ids;
    return { text, ids, decoded: tokenizer.decode(ids, { skip_special_tokens: true, clean_up_tokenization_spaces: false }) };
  });
  writeFileSync(`${here}${name}/expected-ids.json`,
    JSON.stringify({ generator: "@huggingface/tokenizers@0.2.0", cases }, null, 0) + "\n");
  console.log(name, cases.length);
}
