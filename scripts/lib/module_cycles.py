#!/usr/bin/env python3
"""Report import cycles between the top-level modules of a crate.

Usage: scripts/lib/module_cycles.py SRC_DIR [SRC_DIR...]
For each crate source folder, every `crate::MODULE` path in a module's files
is an edge MODULE_OF_FILE -> MODULE. Prints each cycle found; exits 1 if any.
Test-only files (tests.rs, files under a tests/ folder, #[cfg(test)] blocks
are not told apart: a cycle through test code is reported too).
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
            for m in re.finditer(r"crate::([a-z_][a-z0-9_]*)", text):
                if m.group(1) != top:
                    edges.setdefault(top, set()).add(m.group(1))
            # `use super::X` from a top-level file (src/x.rs) names a sibling.
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
    for c in cycles(modules(src)):
        print(f"{src}: cycle {' -> '.join(c)}")
        bad += 1
    if not bad:
        print(f"{src}: no cycle between top-level modules")
sys.exit(1 if bad else 0)
