// Renders every chat template x conversation x add_generation_prompt with @huggingface/jinja (the version pinned in
// package.json) and writes the expected strings, or the template's own error message, as one JSON fixture.
// Usage (from this folder): npm ci && node render.mjs
import { Template } from "@huggingface/jinja";
import { readFileSync, readdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";

const templates = "../../test/Microsoft.ML.Orpo.Tests/TestData/chat-templates";
const spec = JSON.parse(readFileSync("conversations.json", "utf8"));
const version = JSON.parse(readFileSync("node_modules/@huggingface/jinja/package.json", "utf8")).version;

// @huggingface/jinja's strftime_now reads `new Date()` in local time: pin both.
process.env.TZ = "UTC";
const RealDate = Date;
const fixed = new RealDate(spec.date + "Z");
globalThis.Date = class extends RealDate {
  constructor(...args) {
    super(...(args.length === 0 ? [fixed.getTime()] : args));
  }
  static now() {
    return fixed.getTime();
  }
};

const cases = [];
for (const file of readdirSync(templates).filter((f) => f.endsWith(".jinja")).sort()) {
  const name = file.slice(0, -".jinja".length);
  const template = new Template(readFileSync(join(templates, file), "utf8"));
  const tokens = spec.specialTokens[name] ?? {};
  for (const [conversation, messages] of Object.entries(spec.conversations)) {
    for (const addGenerationPrompt of [false, true]) {
      const item = { template: name, conversation, add_generation_prompt: addGenerationPrompt, ...tokens };
      try {
        item.expected = template.render({
          messages, add_generation_prompt: addGenerationPrompt, tools: null, documents: null, ...tokens,
        });
      } catch (e) {
        item.error = e.message;
      }
      cases.push(item);
    }
  }
}

const fixture = {
  generator: `@huggingface/jinja ${version}`,
  command: "cd eng/chat-template-fixtures && npm ci && node render.mjs && python3 check_jinja2.py",
  date: spec.date,
  conversations: spec.conversations,
  cases,
};
writeFileSync(join(templates, "fixtures.json"), JSON.stringify(fixture, null, 2) + "\n");
console.log(`${cases.length} renderings (${cases.filter((c) => c.error).length} rejected by their template) -> ${templates}/fixtures.json`);
