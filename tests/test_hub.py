"""Hub ids resolved through a local huggingface_hub cache (offline), model cards, push_to_hub (HfApi stubbed)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from vfmtok.cli import main
from vfmtok.generator.gpt import GPT, create_gpt
from vfmtok.tokenizer.api import VFMTokenizer
from vfmtok.utils.errors import VFMTokError
from vfmtok.utils.hub import parse_hub_id

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def _cache_repo(cache, repo_id: str, files: dict[str, object]) -> None:
    """Lay out a model repo as huggingface_hub's cache does: refs/main -> snapshots/<commit>/..."""
    root = cache / f"models--{repo_id.replace('/', '--')}"
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text(COMMIT)
    snap = root / "snapshots" / COMMIT
    for rel, src in files.items():
        (snap / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, snap / rel)


@pytest.fixture()
def hub(tmp_path, monkeypatch, tiny_tokenizer_dir):
    cache = tmp_path / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    torch.manual_seed(0)
    gpt = create_gpt("GPT-nano", vocab_size=64, num_tokens=16, token_grid=(4, 4), num_classes=10)
    gdir = gpt.save_pretrained(tmp_path / "gpt")
    tok = {f: tiny_tokenizer_dir / f for f in ("config.json", "model.safetensors")}
    _cache_repo(cache, "me/tiny-tok", tok)
    _cache_repo(cache, "me/pair", {**{f"tokenizer/{f}": p for f, p in tok.items()},
                                   **{f"generator/{f}": gdir / f for f in ("config.json", "model.safetensors")}})
    _cache_repo(cache, "me/half", {"config.json": tiny_tokenizer_dir / "config.json"})
    return gpt, tmp_path


def test_parse_hub_id():
    assert parse_hub_id("me/pair/generator@v1") == ("me/pair", "generator", "v1")
    assert parse_hub_id("hf:me/x") == ("me/x", "", None)
    assert parse_hub_id("./a/b") is None and parse_hub_id("/abs/path") is None and parse_hub_id("plain") is None


def test_from_pretrained_with_hub_ids(hub, tiny_tokenizer_dir):
    gpt, _ = hub
    tok = VFMTokenizer.from_pretrained("me/tiny-tok")
    ref = VFMTokenizer.from_pretrained(tiny_tokenizer_dir)
    ids = torch.randint(0, tok.codebook_size, (1, tok.num_tokens))
    assert torch.equal(tok.decode(ids), ref.decode(ids))
    g = GPT.from_pretrained("me/pair/generator")
    assert all(torch.equal(a, b) for a, b in zip(g.state_dict().values(), gpt.state_dict().values()))


def test_missing_hub_files_one_line(hub):
    with pytest.raises(VFMTokError, match=r"me/nothing .*huggingface-cli download me/nothing config\.json model\.safetensors"):
        VFMTokenizer.from_pretrained("me/nothing")
    with pytest.raises(VFMTokError, match=r"no model\.safetensors.*huggingface-cli download me/half model\.safetensors`"):
        VFMTokenizer.from_pretrained("me/half")


def test_cli_sample_with_hub_ids(hub, capsys):
    _, tmp = hub
    out = tmp / "samples"
    assert main(["sample", "--gpt", "me/pair/generator", "--tokenizer", "me/pair/tokenizer", "--class", "1",
                 "--per-class", "1", "--device", "cpu", "--out", str(out)]) == 0
    assert (out / "samples.npz").is_file()
    assert main(["sample", "--gpt", "me/absent", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "huggingface-cli download me/absent" in err[0]


def test_model_card_and_push(tmp_path, monkeypatch):
    import huggingface_hub

    gpt = create_gpt("GPT-nano", vocab_size=64, num_tokens=16, token_grid=(4, 4), num_classes=10)
    folder = gpt.save_pretrained(tmp_path / "g")
    card = (folder / "README.md").read_text()
    assert "library_name: vfmtok" in card and "## Command" in card and "n_layer=2" in card and "## Metrics" in card
    calls = []

    class FakeApi:
        def __init__(self, token=None):
            pass

        def create_repo(self, repo_id, private=False, exist_ok=False):
            calls.append(("create", repo_id, private))

        def upload_folder(self, repo_id, folder_path, commit_message):
            calls.append(("upload", repo_id, sorted(p.name for p in __import__("pathlib").Path(folder_path).iterdir())))
            return "https://hub/commit/1"

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    from vfmtok.utils.hub import push_to_hub

    assert push_to_hub(folder, "me/g", private=True) == "https://hub/commit/1"
    assert calls == [("create", "me/g", True), ("upload", "me/g", ["README.md", "config.json", "model.safetensors"])]


def test_local_folder_first_hf_hub_forces_the_hub_and_typos_name_both_readings(hub, tmp_path, monkeypatch, tiny_tokenizer_dir):
    gpt, _ = hub
    monkeypatch.chdir(tmp_path)
    local = tmp_path / "me" / "pair" / "generator"  # a local folder spelled like the Hub id
    shutil.copytree(tiny_tokenizer_dir, local)
    assert VFMTokenizer.from_pretrained("me/pair/generator").checkpoint_path == local.relative_to(tmp_path)
    g = GPT.from_pretrained("hf-hub:me/pair/generator")  # the prefix skips the local folder
    assert all(torch.equal(a, b) for a, b in zip(g.state_dict().values(), gpt.state_dict().values()))
    with pytest.raises(VFMTokError) as e:
        VFMTokenizer.from_pretrained("runs/tok")
    msg = str(e.value)
    assert "\n" not in msg and "no folder runs/tok here, and no Hub repo runs/tok" in msg
    with pytest.raises(VFMTokError, match="checkpoint not found: plain-typo"):
        VFMTokenizer.from_pretrained("plain-typo")


def test_hub_downloads_only_the_files_the_model_reads(hub, tmp_path, monkeypatch):
    """A repo holding a pair and a big unrelated model: loading the pair's GPT fetches its files and its tokenizer's."""
    import huggingface_hub

    remote = tmp_path / "remote"
    for rel in ("generator/config.json", "generator/model.safetensors", "tokenizer/config.json",
                "tokenizer/model.safetensors", "GPT-3B/model.safetensors", "GPT-3B/config.json"):
        (remote / rel).parent.mkdir(parents=True, exist_ok=True)
    gdir = hub[1] / "gpt"
    cached = hub[1] / "hub" / "models--me--pair" / "snapshots" / COMMIT
    for rel in ("generator/config.json", "generator/model.safetensors", "tokenizer/config.json", "tokenizer/model.safetensors"):
        shutil.copy(cached / rel, remote / rel)
    meta = __import__("json").loads((remote / "generator" / "config.json").read_text())
    meta["config"]["tokenizer"] = {**(meta["config"].get("tokenizer") or {}), "checkpoint_path": "../tokenizer"}
    (remote / "generator" / "config.json").write_text(__import__("json").dumps(meta))
    for rel in ("GPT-3B/model.safetensors", "GPT-3B/config.json"):
        shutil.copy(gdir / Path(rel).name, remote / rel)
    asked = []

    def fake_snapshot(repo, revision=None, cache_dir=None, local_files_only=False, allow_patterns=None):
        import fnmatch

        asked.append(sorted(allow_patterns))
        snap = tmp_path / "snap"
        for f in remote.rglob("*"):
            rel = f.relative_to(remote).as_posix()
            if f.is_file() and any(fnmatch.fnmatch(rel, p) for p in allow_patterns):
                (snap / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(f, snap / rel)
        return str(snap)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot)
    g = GPT.from_pretrained("me/pair/generator")
    assert g.recorded_tokenizer().is_dir()  # the sibling tokenizer came along
    got = sorted(f.relative_to(tmp_path / "snap").as_posix() for f in (tmp_path / "snap").rglob("*") if f.is_file())
    assert got == ["generator/config.json", "generator/model.safetensors", "tokenizer/config.json",
                   "tokenizer/model.safetensors"]  # never the GPT-3B beside them
    assert all(not any(p.startswith("GPT-3B") for p in a) for a in asked)
