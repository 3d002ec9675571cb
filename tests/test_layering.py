"""Imports run one way, down the layer table of docs/architecture.md, with no import cycle between files (issue 36).

Every import statement of every module counts, at module level or inside a function (parsed with `ast`).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "vfmtok"

# Lowest first; a module may import its own package, any lower layer, and the sideways edges listed below.
LAYERS: list[tuple[str, ...]] = [
    ("utils",),
    ("encoders", "data"),
    ("tokenizer", "generator"),
    ("eval", "train", "official"),
    ("demo_run", "demo_stages", "demo_tour", "demo_report", "serve", "figures", "export", "encode", "vfmtok"),  # apps; "vfmtok" is the package's __init__
    ("cli",),
]
# Sideways imports inside one layer, each with its reason; anything else sideways is refused.
SIDEWAYS = {
    ("data", "encoders"),  # the feature cache stores frozen-encoder features
    ("generator", "tokenizer"),  # a GPT checks and loads the tokenizer its ids belong to
    ("official", "eval"),  # sample-npz runs the official evaluation protocol's sampling settings
    ("demo_run", "demo_stages"), ("demo_run", "demo_tour"), ("demo_run", "demo_report"), ("demo_run", "figures"),
    ("demo_tour", "figures"), ("demo_report", "figures"), ("figures", "export"), ("serve", "figures"),
}
# Known exceptions still to remove, each with its reason (the test fails when one is no longer needed).
PENDING: dict[tuple[str, str], str] = {}
# The command layer alone parses arguments and talks to the terminal.
COMMAND_ONLY = {"argparse"}
# Modules below the command layer allowed to import argparse, each with its reason.
ARGPARSE_ALLOWED = {
    "vfmtok.official.reading": "unpickles the official checkpoints' saved argparse.Namespace (weights_only allow-list)",
}


def module_name(path: Path, root: Path) -> str:
    """vfmtok.a.b for root/a/b.py (and vfmtok.a for root/a/__init__.py)."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(["vfmtok", *parts])


def imports_of(path: Path, root: Path) -> set[str]:
    """Every absolute module name `path` imports (module- or function-level; `from a import b` -> a.b if b is a module)."""
    me = module_name(path, root)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from . import x / from ..a import b
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            subs = {f"{base}.{a.name}" for a in node.names}
            modules = {m for m in subs if _module_file(m, root) is not None}
            # `from pkg import mod` needs pkg/mod.py; pkg/__init__.py runs first anyway, as for any submodule
            found |= modules if modules == subs else modules | {base}
    return found


def _module_file(name: str, root: Path) -> Path | None:
    if not name.startswith("vfmtok"):
        return None
    rel = Path(*name.split(".")[1:]) if "." in name else Path()
    for cand in (root / rel.with_suffix(".py") if rel.parts else None, root / rel / "__init__.py"):
        if cand is not None and cand.is_file():
            return cand
    return None


def unit_of(module: str) -> str:
    """The layer-table entry of a module: its package under vfmtok, its own name for top-level files."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "vfmtok"


def rank_of(unit: str) -> int:
    for i, layer in enumerate(LAYERS):
        if unit in layer:
            return i
    raise KeyError(unit)


def graph(root: Path) -> dict[str, set[str]]:
    """module -> the vfmtok modules it imports (only names that exist as files)."""
    out = {}
    for f in sorted(root.rglob("*.py")):
        out[module_name(f, root)] = {m for m in imports_of(f, root) if _module_file(m, root) is not None}
    return out


def violations(root: Path) -> list[str]:
    """Upward and unlisted sideways imports, as 'a -> b (why)'."""
    bad = []
    for mod, targets in graph(root).items():
        src = unit_of(mod)
        for t in sorted(targets):
            dst = unit_of(t)
            if dst == src or (mod, t) in PENDING:
                continue
            if t == "vfmtok" and mod != "vfmtok":
                bad.append(f"{mod} -> vfmtok (the package facade imports everything)")
            elif rank_of(dst) > rank_of(src):
                bad.append(f"{mod} -> {t} (up: {src} is below {dst})")
            elif rank_of(dst) == rank_of(src) and (src, dst) not in SIDEWAYS:
                bad.append(f"{mod} -> {t} (sideways {src} -> {dst}, not in SIDEWAYS)")
    return bad


def cycles(root: Path) -> list[list[str]]:
    """Strongly connected components of more than one file in the import graph (Tarjan)."""
    g = graph(root)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in g.get(v, ()):
            if w == v or w not in g:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(g):
        if v not in index:
            visit(v)
    return out


def test_every_package_is_in_the_layer_table():
    units = {unit_of(m) for m in graph(SRC)}
    assert len(units) >= 10  # the packages are where this test thinks they are
    assert [u for u in sorted(units) if not any(u in layer for layer in LAYERS)] == []


def test_imports_only_go_down_the_layer_table():
    assert violations(SRC) == []
    g = graph(SRC)
    assert [edge for edge in PENDING if edge[1] not in g.get(edge[0], ())] == []  # stale exceptions are removed


def test_no_import_cycle_between_files():
    assert cycles(SRC) == []


def test_only_the_command_layer_parses_arguments():
    offenders = sorted(f"{m} imports {t}" for m, _ in graph(SRC).items()
                       for t in imports_of(_module_file(m, SRC), SRC) & COMMAND_ONLY
                       if unit_of(m) != "cli" and m not in ARGPARSE_ALLOWED)
    assert offenders == []


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "vfmtok"
    for rel, text in {"__init__.py": "", **files}.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    for d in [p for p in root.rglob("*") if p.is_dir()]:
        (d / "__init__.py").touch()
    return root


def test_the_checks_see_function_level_relative_and_submodule_imports(tmp_path):
    root = _tree(tmp_path, {
        "utils/a.py": "def f():\n    from vfmtok.train import loop\n",  # up, inside a function, a submodule by name
        "train/loop.py": "from ..utils import a\n",  # relative; down (allowed) but closes a file cycle with utils/a
        "eval/x.py": "import vfmtok.official.y\n",  # sideways, not listed
        "official/y.py": "from vfmtok.eval import x as _x\n",
        "tokenizer/t.py": "import argparse\nfrom vfmtok.utils import a\n",
    })
    bad = violations(root)
    assert bad == ["vfmtok.eval.x -> vfmtok.official.y (sideways eval -> official, not in SIDEWAYS)",
                   "vfmtok.utils.a -> vfmtok.train.loop (up: utils is below train)"]
    assert sorted(cycles(root)) == [["vfmtok.eval.x", "vfmtok.official.y"], ["vfmtok.train.loop", "vfmtok.utils.a"]]
    assert "argparse" in imports_of(root / "tokenizer" / "t.py", root)


@pytest.mark.parametrize("module", ["vfmtok.generator.gpt", "vfmtok.tokenizer.api"])
def test_importing_a_model_loads_no_training_eval_or_cli(module):
    upper = [["vfmtok", u] for u in ("train", "eval", "cli")]
    code = (f"import sys, {module}\n"
            f"bad = sorted(m for m in sys.modules if m.split('.')[:2] in {upper!r})\n"
            "print(','.join(bad))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == "", f"importing {module} loaded {r.stdout.strip()}"
