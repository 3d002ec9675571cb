"""Where `fetch-weights` writes and where weight lookup searches agree (and honour the environment)."""

import sys
from pathlib import Path

import pytest

from vfmtok.cli import main
from vfmtok.utils import weights as W
from vfmtok.utils.errors import VFMTokError


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    monkeypatch.delenv("VFMTOK_WEIGHTS", raising=False)
    monkeypatch.setenv("VFMTOK_CACHE", str(tmp_path / "cache"))
    return tmp_path


def test_fetch_default_is_the_first_place_lookup_searches(clean_env, monkeypatch, tmp_path):
    assert W.default_dest() == Path(sys.prefix) / "vfmtok-weights" == W.search_dirs()[0]
    monkeypatch.setenv("VFMTOK_WEIGHTS", str(tmp_path / "w"))
    assert W.default_dest() == tmp_path / "w" == W.search_dirs()[0]
    assert Path(sys.prefix) / "vfmtok-weights" in W.search_dirs()


def test_fetch_without_dest_writes_to_the_default(clean_env, monkeypatch, tmp_path):
    dest = tmp_path / "w"
    dest.mkdir()
    for name in W.SOURCES:  # present already: no download, only the completion marker
        (dest / name).write_bytes(b"x")
    monkeypatch.setenv("VFMTOK_WEIGHTS", str(dest))
    assert main(["fetch-weights"]) == 0
    assert (dest / ".complete").is_file()
    assert W.find_weight("vgg16.ckpt") == dest / "vgg16.ckpt"


def test_lookup_reads_the_vfmtok_cache_folder(clean_env, monkeypatch, tmp_path):
    monkeypatch.setattr(sys, "prefix", str(tmp_path / "no-venv"))  # nothing in <venv>/vfmtok-weights
    with pytest.raises(VFMTokError, match="not found"):
        W.find_weight("alexnet.ckpt")
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "alexnet.ckpt").write_bytes(b"x")
    assert W.find_weight("alexnet.ckpt") == tmp_path / "cache" / "alexnet.ckpt"


def test_fetch_help_names_the_default():
    import argparse

    from vfmtok.cli import fetch_weights as fetch_cmd

    p = argparse.ArgumentParser()
    fetch_cmd.add_arguments(p)
    dest = next(a for a in p._actions if a.dest == "dest")
    assert "<venv>/vfmtok-weights" in dest.help and "VFMTOK_WEIGHTS" in dest.help
