// The llama.cpp generation peer: node-llama-cpp (prebuilt llama.cpp, CPU only) greedy-decodes the gen.MODEL.cache.b1
// scenario from the GGUF and prompt ids that `Microsoft.ML.Orpo.Benchmarks --export-gguf DIR` wrote, and prints one
// JSON line. Timing matches the .NET harness's Scenarios.Generate: one full-length warm-up run, then one timed run
// (--repeats N: N timed runs, the median reported) of prefill + new tokens, tokens/s = new tokens / that time. The
// prefill (the prompt in one batch, up to the first new token) is timed separately and the decode-only rate is
// (new tokens - 1) / (total - prefill), as ours reports them.
// Usage: node llamacpp_peer.mjs --dir DIR --model stories260K|llama41m [--threads 1] [--new 256] [--repeats 1]
import { readFileSync } from "node:fs";
import path from "node:path";
import { getLlama } from "node-llama-cpp";

const version = "3.21.1";
const args = Object.fromEntries(process.argv.slice(2).reduce((a, v, i, all) => (i % 2 === 0 ? [...a, [v.replace(/^--/, ""), all[i + 1]]] : a), []));
const dir = args.dir, name = args.model;
const threads = Number(args.threads ?? 1), newTokens = Number(args.new ?? 256), repeats = Number(args.repeats ?? 1);
const ids = (file) => readFileSync(path.join(dir, file), "utf8").trim().split(/\s+/).map(Number);
const prompt = ids(`${name}.prompt.txt`);
const ours = ids(`${name}.ours.txt`);

const llama = await getLlama({ gpu: false, build: "never", maxThreads: threads, logLevel: "error" });
const model = await llama.loadModel({ modelPath: path.join(dir, `${name}.f32.gguf`), gpuLayers: 0 });
const contextOptions = {
    contextSize: prompt.length + newTokens, batchSize: prompt.length, sequences: 1,
    threads: { ideal: threads, min: threads },
};
// An f32 KV cache like ours, through node-llama-cpp's experimental option; f16 (its default) if that fails.
let context, kvCache = "f32";
try {
    context = await model.createContext({ ...contextOptions, experimentalKvCacheKeyType: "F32", experimentalKvCacheValueType: "F32" });
} catch (error) {
    kvCache = "f16";
    console.error(`f32 KV cache refused (${error.message}); using f16`);
    context = await model.createContext(contextOptions);
}
const sequence = context.getSequence();

async function run() {
    await sequence.clearHistory();
    const out = [];
    let prefill = 0;
    const start = process.hrtime.bigint();
    // Greedy, no repetition penalty; EOS is just another token (our side never stops on it either).
    for await (const token of sequence.evaluate(prompt, { temperature: 0, yieldEogToken: true })) {
        if (out.length === 0) prefill = Number(process.hrtime.bigint() - start) / 1e9;
        out.push(Number(token));
        if (out.length >= newTokens) break;
    }
    const seconds = Number(process.hrtime.bigint() - start) / 1e9;
    return { out, prefill, seconds };
}

await run(); // warm-up, full length
const runs = [];
for (let i = 0; i < repeats; i++) runs.push(await run());
runs.sort((a, b) => a.seconds - b.seconds);
const m = runs[Math.floor((runs.length - 1) / 2)];
let prefix = 0;
while (prefix < m.out.length && m.out[prefix] === ours[prefix]) prefix++;
const round = (x, d) => Math.round(x * 10 ** d) / 10 ** d;
console.log(JSON.stringify({
    scenario: `gen.${name}.cache.b1`, impl: "llama.cpp", engine: `llama.cpp (node-llama-cpp ${version})`,
    metric: "gen_tokens_per_s", value: round(m.out.length / m.seconds, 2), tokens_per_s: round(m.out.length / m.seconds, 2),
    decode_tokens_per_s: round((m.out.length - 1) / (m.seconds - m.prefill), 2), prefill_s: round(m.prefill, 4),
    seconds: round(m.seconds, 3), batch: 1, prompt: prompt.length, new_tokens: m.out.length, threads,
    context_threads: context.currentThreads ?? null, kv_cache: kvCache, flash_attention: context.flashAttention ?? null,
    batch_size: context.batchSize ?? null, system_info: llama.systemInfo.trim(), repeats, all_seconds: runs.map((r) => round(r.seconds, 3)),
    first_ids: m.out.slice(0, 8).join(","), same_prefix_as_ours: prefix, compared: Math.min(ours.length, m.out.length),
}));
await context.dispose();
await model.dispose();
