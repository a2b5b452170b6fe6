"""Mutates the real templates (token deletes, duplicates, swaps; seeded) and records what jinja2, set up as
transformers sets it up, renders for each: the output, or only the fact of an error (messages differ between
engines). The C# interpreter must agree on every case (ChatTemplateDifferentialTests).
Usage: python3 differential.py [count] [seed]"""
import json
import random
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import check_jinja2 as reference  # noqa: E402  (renders and checks the fixtures on import)

count = int(sys.argv[1]) if len(sys.argv) > 1 else 400
rng = random.Random(int(sys.argv[2]) if len(sys.argv) > 2 else 20261206)
token = re.compile(r"\{\{-?|-?\}\}|\{%-?|-?%\}|\{#|#\}|\w+|\s+|.", re.S)
root = reference.root
sources = {p.stem: p.read_text(encoding="utf-8") for p in sorted(root.glob("*.jinja"))}
conversation = reference.fixture["conversations"]["system-multi-turn"]

cases = []
while len(cases) < count:
    name = rng.choice(sorted(sources))
    tokens = token.findall(sources[name])
    for _ in range(1 + rng.randrange(3)):
        i = rng.randrange(len(tokens))
        op = rng.randrange(3)
        if op == 0:
            del tokens[i]
        elif op == 1:
            tokens.insert(i, tokens[rng.randrange(len(tokens))])
        else:
            j = rng.randrange(len(tokens))
            tokens[i], tokens[j] = tokens[j], tokens[i]
    source = "".join(tokens)
    item = {"template": source}
    try:
        item["expected"] = reference.env.from_string(source).render(
            messages=conversation, tools=None, documents=None, add_generation_prompt=True, bos_token="<s>", eos_token="</s>")
    except Exception as e:  # any failure: the interpreter must fail too
        item["error"] = type(e).__name__
    cases.append(item)

out = root / "differential.json"
out.write_text(json.dumps({"generator": f"jinja2 {reference.jinja2.__version__}", "command": "python3 differential.py "
                           + " ".join(sys.argv[1:]), "date": reference.fixture["date"], "conversation": conversation,
                           "cases": cases}, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
print(f"{len(cases)} mutated templates ({sum('error' in c for c in cases)} rejected by jinja2) -> {out}")
