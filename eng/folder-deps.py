#!/usr/bin/env python3
"""Folder dependency graph of src/Microsoft.ML.Orpo: which folder's code names a type declared in another folder.
Prints the edges and any cycle; exits 1 on a cycle. The root folder (the public API) is '.'. An edge from an inner
folder into the root counts only where it names a root type that itself names nothing outside the root (the option,
metric and enum records every layer takes are leaves; OrpoTransformer is not): a folder may read the options it is
given, but a folder the root calls must not call back into the root's logic."""
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
uses = {}  # type declared in the root -> names it uses from other folders
for p, (folder, text) in files.items():
    # A type is named where it is not a member access (x.Name), a member being declared (string Name { / Name =
    # / Name:), or an argument name (name: value).
    code = strip(text)
    keywords = {"new", "public", "internal", "private", "protected", "static", "return", "is", "as", "out", "ref", "in",
                "readonly", "const", "sealed", "override", "async", "await", "typeof", "case", "throw", "using", "var",
                "abstract", "virtual", "partial", "params", "this", "where", "class", "record", "struct", "interface",
                "enum", "delegate", "unsafe", "volatile", "extern", "implicit", "explicit", "operator", "yield", "else"}
    words = set()
    for m in re.finditer(r'(?<![.\w])([A-Z]\w*)\b(?!\s*(?:[{=:]|=>))', code):
        before = re.search(r'([\w>\]?])\s+$', code[max(0, m.start() - 40):m.start()])
        if before and before.group(1)[-1].isalnum() or (before and before.group(1) in ">]?"):
            prev = re.search(r'(\w+)\s+$', code[max(0, m.start() - 40):m.start()])
            if prev and prev.group(1) not in keywords: continue  # "Type Name": a declared name, not a type use
        words.add(m.group(1))
    # Names the file itself declares as a field, local or method (a field called Json, a helper called Required).
    local = {m.group(2) for m in re.finditer(r'(\w+|[>\]?])\s+([A-Za-z_]\w*)\s*(?:=[^=>]|;|\()', code) if m.group(1) not in keywords}
    for word in words - local:
        for other in owner.get(word, ()):
            if other != folder and not (len(owner[word]) > 1 and folder in owner[word]):
                edges.setdefault((folder, other), set()).add(word)
                if folder == ".":
                    for declared in decl.findall(text): uses.setdefault(declared, set()).add(word)
graph = {}
for (a, b), names in sorted(edges.items()):
    if b == ".":
        names = {n for n in names if uses.get(n)}  # only root types with logic of their own
        if not names: continue
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
print('no cycles' if not sccs else '')
sys.exit(1 if sccs else 0)
