#!/usr/bin/env python3
"""Folder dependency graph of src/Microsoft.ML.Orpo: which folder's code names a type declared in another folder.
Prints the edges and any cycle; exits 1 on a cycle. The root folder (public API) is '.'; with --root-ok, edges from
inner folders to the root are ignored (the public option and metric types every layer takes)."""
import os, re, sys
root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src", "Microsoft.ML.Orpo")
decl = re.compile(r'^(?:\[[^\]]*\]\s*)*(?:(?:public|internal|private|protected|static|sealed|abstract|partial|readonly|unsafe|file|ref|record)\s+)*(?:class|record|struct|enum|interface|delegate\s+[\w<>\[\]?, .]+?)\s+([A-Z]\w*)', re.M)
files = {}
for d, _, fs in os.walk(root):
    if "/obj" in d or "/bin" in d: continue
    for f in fs:
        if f.endswith(".cs"):
            p = os.path.join(d, f)
            rel = os.path.relpath(p, root)
            folder = rel.split(os.sep)[0] if os.sep in rel else "."
            files[p] = (folder, open(p, encoding="utf-8").read())
owner = {}
for p, (folder, text) in files.items():
    for name in decl.findall(text):
        owner.setdefault(name, set()).add(folder)
def strip(text):
    text = re.sub(r'//.*', '', text)
    text = re.sub(r'/\*.*?\*/', '', text, flags=re.S)
    return re.sub(r'"(?:\\.|[^"\\])*"', '""', text)
edges = {}
for p, (folder, text) in files.items():
    # A type is named where it is not a member access (x.Name), a member being declared (string Name { / Name =
    # / Name:), or an argument name (name: value).
    code = strip(text)
    words = set(m.group(1) for m in re.finditer(r'(?<![.\w])(?<![\w>\]?] )([A-Z]\w*)\b(?!\s*(?:[{=:]|=>))', code))
    for word in words:
        for other in owner.get(word, ()):
            if other != folder and not (len(owner[word]) > 1 and folder in owner[word]):
                edges.setdefault((folder, other), set()).add(word)
ignore_root = "--root-ok" in sys.argv
graph = {}
for (a, b), names in sorted(edges.items()):
    if ignore_root and b == ".": continue
    graph.setdefault(a, set()).add(b)
    print(f"{a} -> {b}: {', '.join(sorted(names)[:8])}{' ...' if len(names) > 8 else ''}")
# cycles: strongly connected components
index, low, stack, on, sccs, counter = {}, {}, [], set(), [], [0]
def visit(v):
    index[v] = low[v] = counter[0]; counter[0] += 1; stack.append(v); on.add(v)
    for w in graph.get(v, ()):
        if w not in index: visit(w); low[v] = min(low[v], low[w])
        elif w in on: low[v] = min(low[v], index[w])
    if low[v] == index[v]:
        comp = []
        while True:
            w = stack.pop(); on.discard(w); comp.append(w)
            if w == v: break
        if len(comp) > 1: sccs.append(sorted(comp))
for v in list(graph): 
    if v not in index: visit(v)
for c in sccs: print("CYCLE:", " <-> ".join(c))
sys.exit(1 if sccs else 0)
