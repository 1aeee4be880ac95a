"""The three layers and the one direction of their imports.

lskd_fairseq (plugin + shared math)  <-  lskd_vision  <-  lskd_study
                                     <-------------------  lskd_study

Checked twice: statically over every import statement (function-level ones
included), and by importing each package in a fresh interpreter.
"""

import ast
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = {"lskd_fairseq": "lskd_fairseq", "lskd_vision": "vision", "lskd_study": "study"}
# modules of the plugin that the other layers may import (fairseq-free shared code)
# (pure Python or numpy: the math, one atomic write, the integrity checks, the output convention)
SHARED = {"lskd_fairseq", "lskd_fairseq.losses", "lskd_fairseq.metrics", "lskd_fairseq.atomic",
          "lskd_fairseq.integrity", "lskd_fairseq.console", "lskd_fairseq.errors", "lskd_fairseq.warning_filters"}


def _modules():
    mods = {}
    for pkg, folder in PACKAGES.items():
        root = os.path.join(REPO, folder)
        for dirpath, _, files in os.walk(root):
            for f in files:
                if not f.endswith(".py"):
                    continue
                rel = os.path.relpath(os.path.join(dirpath, f), root)[:-3].split(os.sep)
                if rel[-1] == "__init__":
                    rel = rel[:-1]
                mods[".".join([pkg] + rel)] = os.path.join(dirpath, f)
    return mods


def _imports(name, path, known):
    is_pkg = path.endswith("__init__.py")
    tree = ast.parse(open(path, encoding="utf-8").read(), path)
    out = set()
    for node in ast.walk(tree):
        targets = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_pkg else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module
            targets = [mod] + [f"{mod}.{a.name}" for a in node.names]
        for t in targets:
            # the longest known module the name refers to
            while t and t not in known:
                t = t.rpartition(".")[0]
            if t and t != name:
                out.add(t)
    return out


def _graph():
    mods = _modules()
    return {m: _imports(m, p, mods) for m, p in mods.items()}


def test_layer_direction_static():
    bad = []
    for mod, deps in _graph().items():
        for d in deps:
            if mod.startswith("lskd_fairseq") and not d.startswith("lskd_fairseq"):
                bad.append(f"{mod} -> {d}")
            if mod.startswith("lskd_vision") and (d.startswith("lskd_study")
                                                  or (d.startswith("lskd_fairseq") and d not in SHARED)):
                bad.append(f"{mod} -> {d}")
    assert not bad, "imports against the layer direction:\n" + "\n".join(sorted(bad))


def test_no_import_cycles():
    g = _graph()
    state, stack, cycles = {}, [], []

    def visit(m):
        state[m] = 1
        stack.append(m)
        for d in sorted(g.get(m, ())):
            if state.get(d) == 1:
                # a package importing its own submodule that imports the package's siblings is
                # Python's package mechanism, not a cycle between modules
                cyc = stack[stack.index(d):] + [d]
                if not (len(cyc) == 3 and cyc[1].startswith(cyc[0] + ".")):
                    cycles.append(" -> ".join(cyc))
            elif not state.get(d):
                visit(d)
        stack.pop()
        state[m] = 2

    for m in sorted(g):
        if not state.get(m):
            visit(m)
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


@pytest.mark.parametrize("module,forbidden", [
    ("lskd_vision", ["fairseq", "lskd_study"]),
    ("lskd_vision.train", ["fairseq", "lskd_study"]),
    ("lskd_fairseq", ["lskd_vision", "lskd_study", "fairseq"]),
    ("lskd_fairseq.losses", ["lskd_vision", "lskd_study", "fairseq"]),
    ("lskd_fairseq.tasks", ["lskd_vision", "lskd_study"]),
    ("lskd_fairseq.cli.bleu", ["lskd_vision", "lskd_study"]),
    ("lskd_study", ["fairseq", "lskd_vision"]),
])
def test_importing_a_layer_does_not_import_the_ones_above(module, forbidden):
    code = (f"import sys, {module}\n"
            f"bad = [m for m in {forbidden!r} if m in sys.modules]\n"
            "print(bad); sys.exit(1 if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0, r.stdout + r.stderr
