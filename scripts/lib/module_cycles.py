#!/usr/bin/env python3
"""Report import cycles between the top-level modules of a crate.

Usage: scripts/lib/module_cycles.py SRC_DIR [SRC_DIR...]
For each crate source folder, every `crate::MODULE` path in a module's files
is an edge MODULE_OF_FILE -> MODULE. Prints each cycle found; exits 1 if any.
Paths count whether written `crate::a::b` or grouped `crate::{a, b}`, and
`super::x` in a top-level file. Test code is not told apart: a cycle through
a #[cfg(test)] module is reported too.
"""
import os, re, sys

def modules(src):
    edges = {}
    for root, _, files in os.walk(src):
        for f in files:
            if not f.endswith(".rs"):
                continue
            path = os.path.join(root, f)
            rel = os.path.relpath(path, src)
            top = rel.split(os.sep)[0].removesuffix(".rs")
            if top in ("lib", "main"):
                continue
            # Code only: doc links and comments name modules without using them.
            text = "\n".join(l for l in open(path).read().splitlines() if not l.lstrip().startswith("//"))
            names = [m.group(1) for m in re.finditer(r"crate::([a-z_][a-z0-9_]*)", text)]
            # `use crate::{a::X, b}`: each item's first segment.
            for g in re.finditer(r"crate::\{([^}]*)\}", text):
                names += re.findall(r"(?:^|,)\s*([a-z_][a-z0-9_]*)", g.group(1))
            # `super::x` in a top-level file (src/x.rs) names a sibling module.
            if os.sep not in rel:
                names += [m.group(1) for m in re.finditer(r"\bsuper::([a-z_][a-z0-9_]*)", text)]
            for n in names:
                if n != top and n not in ("self", "super"):
                    edges.setdefault(top, set()).add(n)
    return edges

def cycles(edges):
    found, seen = [], set()
    def walk(node, stack):
        for nxt in sorted(edges.get(node, ())):
            if nxt in stack:
                cyc = stack[stack.index(nxt):] + [nxt]
                key = frozenset(cyc)
                if key not in seen:
                    seen.add(key)
                    found.append(cyc)
            elif len(stack) < 12:
                walk(nxt, stack + [nxt])
    for n in sorted(edges):
        walk(n, [n])
    return found

bad = 0
for src in sys.argv[1:]:
    found = cycles(modules(src))
    for c in found:
        print(f"{src}: cycle {' -> '.join(c)}")
    if not found:
        print(f"{src}: no cycle between top-level modules")
    bad += len(found)
sys.exit(1 if bad else 0)
