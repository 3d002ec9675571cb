"""Linear probing: the L-BFGS probe on synthetic features, and `vfmtok probe` with a fake tokenizer on real images."""

import json

import pytest
import torch

import vfmtok.eval.probe as P
from vfmtok.cli import main
from vfmtok.eval.imagesets import open_image_set, subset_indices
from vfmtok.eval.probe import train_linear_probe

from test_eval_commands import FakeTokenizer


def _clusters(n_per_class, num_classes, dim, sep, seed):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(num_classes, dim, generator=g) * sep
    y = torch.arange(num_classes).repeat_interleave(n_per_class)
    return centres[y] + torch.randn(len(y), dim, generator=g) * 3.0 + 100.0, y  # offset: standardisation matters


def test_probe_separable_vs_random_labels():
    x_tr, y_tr = _clusters(40, 5, 20, 3.0, 0)
    x_va, y_va = _clusters(20, 5, 20, 3.0, 0)  # same centres (same seed), fresh noise below
    x_va = x_va + torch.randn(x_va.shape, generator=torch.Generator().manual_seed(1)) * 0.5
    good = train_linear_probe(x_tr, y_tr, x_va, y_va, 5, weight_decay=1e-3, max_iter=100)
    assert good["top1_val"] > 0.9 and good["top1_train"] > 0.9
    y_rand = y_tr[torch.randperm(len(y_tr), generator=torch.Generator().manual_seed(2))]
    chance = train_linear_probe(x_tr, y_rand, x_va, y_va, 5, weight_decay=1e-3, max_iter=100)
    assert chance["top1_val"] < 0.45  # 5 classes: chance is 0.2
    again = train_linear_probe(x_tr, y_tr, x_va, y_va, 5, weight_decay=1e-3, max_iter=100)
    assert again == good  # deterministic


@pytest.mark.parametrize("with_cls", [False, True])
def test_probe_command(tmp_path, monkeypatch, with_cls):
    ck = tmp_path / "tok"
    ck.mkdir()
    (ck / "model.safetensors").write_bytes(b"w")
    monkeypatch.setattr("vfmtok.eval.probe.load_tokenizer", lambda path, device: FakeTokenizer(path, with_cls=with_cls))
    out = tmp_path / "probe.json"
    assert main(["probe", str(ck), "--data", "sample", "--num-images", "60", "--max-iter", "30", "--out", str(out)]) == 0
    rec = json.loads(out.read_text())
    keys = sorted(rec["metrics"])
    assert keys == (["cls", "tokens_mean"] if with_cls else ["tokens_mean"])
    # The command reports what the probe gives on the subsets it names: recompute from the same seeded subsets.
    tok = FakeTokenizer(ck, with_cls=with_cls)
    tr, va = open_image_set("sample", tok.image_size, split="train"), open_image_set("sample", tok.image_size, split="val")
    f_tr, y_tr = P.extract_features(tok, tr, subset_indices(len(tr), 60, 0), 32, "cpu", "train")
    f_va, y_va = P.extract_features(tok, va, subset_indices(len(va), 60, 1), 32, "cpu", "val")
    for k in keys:
        want = train_linear_probe(f_tr[k], y_tr, f_va[k], y_va, 10, weight_decay=1e-3, max_iter=30)
        assert rec["metrics"][k]["top1_val"] == want["top1_val"] and rec["metrics"][k]["top1_train"] == want["top1_train"]
        assert want["top1_train"] > 0.1  # the colour statistics separate the training images better than chance
    assert rec["metrics"]["tokens_mean"]["dim"] == 6 and rec["data"]["num_train"] == 60 and rec["data"]["num_val"] == 60
    assert len(rec["data"]["classes"]) == 10
    assert any("no CLS token" in n for n in rec["notes"]) != with_cls
    assert (tmp_path / "probe.md").read_text().count("tokens_mean") == 1


def test_probe_needs_splits_and_labels(tmp_path, monkeypatch, capsys):
    ck = tmp_path / "tok"
    ck.mkdir()
    monkeypatch.setattr("vfmtok.eval.probe.load_tokenizer", lambda path, device: FakeTokenizer(path))
    flat = tmp_path / "flat"
    (flat / "a").mkdir(parents=True)
    from PIL import Image
    Image.new("RGB", (40, 40)).save(flat / "a" / "x.png")
    assert main(["probe", str(ck), "--data", str(flat)]) == 2
    assert "no separate 'train' and 'val' splits" in capsys.readouterr().err
