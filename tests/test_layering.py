"""Imports run one way, down: models never pull in training, evaluation or the CLI (issue 13)."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "vfmtok"
UPPER = ("vfmtok.train", "vfmtok.eval", "vfmtok.cli")


@pytest.mark.parametrize("module", ["vfmtok.generator.gpt", "vfmtok.tokenizer.api"])
def test_importing_a_model_loads_no_training_eval_or_cli(module):
    code = (f"import sys, {module}\n"
            f"bad = sorted(m for m in sys.modules if m.split('.')[:2] in {[u.split('.') for u in UPPER]!r})\n"
            "print(','.join(bad))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == "", f"importing {module} loaded {r.stdout.strip()}"


IMPORT_UP = re.compile(r"^\s*(?:import vfmtok\.train|from vfmtok\.train|from vfmtok\.cli\b|import vfmtok\.cli\b)", re.M)


def test_no_lower_package_imports_train_or_cli():
    files = [f for pkg in ("tokenizer", "generator", "encoders", "data", "utils") for f in (SRC / pkg).rglob("*.py")]
    assert len(files) > 20  # the packages are where this test thinks they are
    offenders = [f"{f.relative_to(SRC)}: {m.group(0).strip()}" for f in files for m in IMPORT_UP.finditer(f.read_text())]
    assert offenders == []


def test_the_static_check_catches_an_upward_import():
    assert IMPORT_UP.search("def f():\n    from vfmtok.train.common import autocast\n")
    assert IMPORT_UP.search("import vfmtok.cli\n") and not IMPORT_UP.search("from vfmtok.utils.args import add\n")
