// Greedy decoding from BOS with node-llama-cpp (prebuilt llama.cpp), compared token for token with this library's ids.
// Usage: node gguf-llamacpp-check.mjs <folder with stories260K-{f32,f16,q8_0}.gguf and ours.txt> <tokens>
import { readFileSync } from "node:fs";
import path from "node:path";
import { getLlama } from "node-llama-cpp";

const [folder, count = "256"] = process.argv.slice(2);
const n = Number(count);
const ours = readFileSync(path.join(folder, "ours.txt"), "utf8").trim().split(/\s+/).map(Number);
const llama = await getLlama({ gpu: false, build: "never" });
let failed = false;
for (const type of ["f32", "f16", "q8_0"]) {
    const model = await llama.loadModel({ modelPath: path.join(folder, `stories260K-${type}.gguf`) });
    const context = await model.createContext({ contextSize: n + 1, batchSize: 64, threads: 1 });
    const sequence = context.getSequence();
    const ids = [];
    // Greedy, no repetition penalty, and EOS is just another token (our side never stops on it either).
    for await (const token of sequence.evaluate([model.tokens.bos], { temperature: 0, yieldEogToken: true })) {
        ids.push(Number(token));
        if (ids.length >= n) break;
    }
    let prefix = 0;
    while (prefix < n && ids[prefix] === ours[prefix]) prefix++;
    const same = ids.filter((t, i) => t === ours[i]).length;
    console.log(`${type}: first ${prefix}/${n} tokens equal, ${same}/${n} positions equal`);
    if (type === "f32" && prefix !== n) failed = true;
    if (type === "f32") console.log(`f32 text: ${JSON.stringify(model.detokenize(ids.map(Number)))}`);
    await context.dispose();
    await model.dispose();
}
console.log(failed ? "FAIL: node-llama-cpp's F32 greedy ids differ from ours" : "PASS: node-llama-cpp's F32 greedy ids equal ours for all tokens");
process.exit(failed ? 1 : 0);
