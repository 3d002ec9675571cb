"""Issue 15 item 5: nothing unpickles outside an allow-list, no server listens beyond localhost by default (static)."""

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "vfmtok"


def _calls(tree):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            f = node.func
            name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""
            owner = f.value.id if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) else ""
            yield owner, name, node


def _kw(node, key):
    return next((k.value for k in node.keywords if k.arg == key), None)


def _sources():
    return [(p, ast.parse(p.read_text())) for p in sorted(SRC.rglob("*.py"))]


def test_every_torch_load_is_weights_only():
    found = 0
    for path, tree in _sources():
        for owner, name, node in _calls(tree):
            if owner == "torch" and name == "load":
                found += 1
                v = _kw(node, "weights_only")
                assert isinstance(v, ast.Constant) and v.value is True, f"{path}:{node.lineno} torch.load without weights_only=True"
    assert found >= 2  # the checker sees the known call sites (train state, FID Inception)


def test_no_pickle_outside_the_numpy_only_unpickler():
    for path, tree in _sources():
        for owner, name, node in _calls(tree):
            if owner == "pickle" and name in ("load", "loads", "Unpickler"):
                raise AssertionError(f"{path}:{node.lineno} pickle.{name}")
            if name == "load" and owner in ("np", "numpy"):
                v = _kw(node, "allow_pickle")
                assert v is None or (isinstance(v, ast.Constant) and v.value is False), f"{path}:{node.lineno} allow_pickle"
            bare = isinstance(node.func, ast.Name)  # eval(text), not model.eval()
            assert not (bare and name in ("eval", "exec")), f"{path}:{node.lineno} {name}()"
    unpickler = (SRC / "utils" / "weights.py").read_text()
    assert "def find_class" in unpickler and "refusing to unpickle" in unpickler


def test_servers_bind_localhost_by_default():
    for path, tree in _sources():
        text = path.read_text()
        assert "0.0.0.0" not in text and '"::"' not in text, f"{path} names an all-interfaces address"
        for owner, name, node in _calls(tree):
            if name == "add_argument" and node.args and isinstance(node.args[0], ast.Constant) and node.args[0].value == "--host":
                v = _kw(node, "default")
                assert isinstance(v, ast.Constant) and v.value in ("127.0.0.1", "localhost"), f"{path}:{node.lineno} --host"


def test_numpy_only_unpickler_refuses_code(tmp_path):
    import pickle

    import pytest

    from vfmtok.utils.errors import VFMTokError
    from vfmtok.utils.weights import load_flax_pickle

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    bad = tmp_path / "evil.ckpt"
    bad.write_bytes(pickle.dumps({"w": Evil()}))
    with pytest.raises(VFMTokError, match="refusing to unpickle"):
        load_flax_pickle(bad)
