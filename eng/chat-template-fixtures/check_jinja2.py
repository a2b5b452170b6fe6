"""Renders every fixture case with Python's jinja2 set up as transformers' apply_chat_template sets it up
(ImmutableSandboxedEnvironment, trim_blocks, lstrip_blocks, loopcontrols, its tojson, raise_exception,
strftime_now) and checks that it agrees with fixtures.json, made by @huggingface/jinja. Exits 1 on any difference."""
import json
import sys
from datetime import datetime
from pathlib import Path

import jinja2
from jinja2.ext import Extension, loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment

root = Path(__file__).resolve().parents[2] / "test/Microsoft.ML.Orpo.Tests/TestData/chat-templates"
fixture = json.loads((root / "fixtures.json").read_text(encoding="utf-8"))
now = datetime.fromisoformat(fixture["date"])


class TemplateError(Exception):
    pass


class AssistantTracker(Extension):
    # transformers' {% generation %} block, rendered as its body.
    tags = {"generation"}

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(["name:endgeneration"], drop_needle=True)
        return jinja2.nodes.CallBlock(self.call_method("_render"), [], [], body).set_lineno(lineno)

    def _render(self, caller):
        return caller()


def raise_exception(message):
    raise TemplateError(message)


def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def strftime_now(format):
    return now.strftime(format)


env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[AssistantTracker, loopcontrols])
env.filters["tojson"] = tojson
env.globals["raise_exception"] = raise_exception
env.globals["strftime_now"] = strftime_now

def main():
    templates = {}
    differences = 0
    for case in fixture["cases"]:
        name = case["template"]
        if name not in templates:
            templates[name] = env.from_string((root / f"{name}.jinja").read_text(encoding="utf-8"))
        tokens = {k: case[k] for k in ("bos_token", "eos_token") if k in case}
        try:
            actual = {"expected": templates[name].render(
                messages=fixture["conversations"][case["conversation"]], tools=None, documents=None,
                add_generation_prompt=case["add_generation_prompt"], **tokens)}
        except TemplateError as e:
            actual = {"error": str(e)}
        wanted = {k: case[k] for k in ("expected", "error") if k in case}
        if actual != wanted:
            differences += 1
            print(f"DIFFERS {name} / {case['conversation']} / add_generation_prompt={case['add_generation_prompt']}")
            print(f"  @huggingface/jinja: {wanted!r}\n  jinja2:             {actual!r}")

    print(f"jinja2 {jinja2.__version__}: {len(fixture['cases']) - differences} of {len(fixture['cases'])} renderings agree with {fixture['generator']}")
    sys.exit(1 if differences else 0)


if __name__ == "__main__":
    main()
