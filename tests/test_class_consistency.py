"""Class consistency on a synthetic two-colour dataset, where every answer is known."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from vfmtok.cli import main
from vfmtok.eval.class_consistency import (ClassProbe, balanced_indices, class_consistency, fit_class_probe,
                                           real_val_top1, top1)
from vfmtok.utils.errors import VFMTokError

COLOURS = {"blue": (30, 40, 220), "red": (220, 30, 40)}  # sorted names: blue = 0, red = 1


def _image(rng, colour):
    base = np.array(colour, dtype=np.float64)
    return np.clip(base + rng.normal(0, 25, (32, 32, 3)), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def colours(tmp_path_factory):
    root = tmp_path_factory.mktemp("colours")
    rng = np.random.default_rng(0)
    for split, n in (("train", 8), ("val", 5)):
        for name, col in COLOURS.items():
            (root / split / name).mkdir(parents=True)
            for i in range(n):
                Image.fromarray(_image(rng, col)).save(root / split / name / f"{i}.png")
    return root


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("VFMTOK_CACHE", str(tmp_path / "cache"))


def _probe(colours, **kw):
    return fit_class_probe(str(colours), 32, per_class=8, pretrained=False, input_size=32, max_iter=50, **kw)


def test_known_answers_and_cache_round_trip(colours, tmp_path):
    torch.manual_seed(0)  # random VGG16 weights: colour still separates the classes
    cp = _probe(colours)
    assert cp.class_names == ["blue", "red"] and cp.meta["num_train"] == 16
    assert real_val_top1(cp, str(colours), "val", None)["top1"] == 1.0
    rng = np.random.default_rng(1)
    samples = np.stack([_image(rng, COLOURS["red"]) for _ in range(3)] + [_image(rng, COLOURS["blue"]) for _ in range(3)])
    # All six were "sampled for" red: the three blue ones are inconsistent.
    r = class_consistency(cp, samples, np.ones(6, np.int64))
    assert r["top1"] == 0.5 and r["per_class"] == {1: 0.5} and r["num_images"] == 6
    # A second fit with the same settings reads the cached probe (same weights even with other random VGG weights).
    torch.manual_seed(123)
    again = _probe(colours)
    assert torch.equal(again.probe.weight, cp.probe.weight)
    assert len(list((tmp_path / "cache" / "class_probes").glob("*.npz"))) == 1
    loaded = ClassProbe.load(next((tmp_path / "cache" / "class_probes").glob("*.npz")))
    assert loaded.class_names == cp.class_names and loaded.resolution == 32 and not loaded.pretrained
    # The real-val score was stored with the probe: a reload answers without features (the encoder is never built).
    loaded.features = None
    assert real_val_top1(loaded, str(colours), "val", None) == {"top1": 1.0, "per_class": {0: 1.0, 1: 1.0}, "num_images": 10}


def test_top1_and_balanced_indices():
    r = top1(np.array([0, 1, 1, 2]), np.array([0, 1, 2, 2]), 3)
    assert r["top1"] == 0.75 and r["per_class"] == {0: 1.0, 1: 1.0, 2: 0.5}
    idx = balanced_indices([0, 0, 0, 1, 1, 2], 2, seed=0)
    assert sorted(np.bincount(np.array([0, 0, 0, 1, 1, 2])[idx]).tolist()) == [1, 2, 2]
    with pytest.raises(VFMTokError):
        top1(np.array([]), np.array([]), 2)


def test_wrong_resolution_is_a_clear_error(colours):
    cp = _probe(colours)
    with pytest.raises(VFMTokError, match="fit at 32 px"):
        cp.predict(np.zeros((2, 16, 16, 3), np.uint8))


def test_cli_on_a_samples_file(colours, tmp_path, capsys):
    rng = np.random.default_rng(2)
    imgs = np.stack([_image(rng, COLOURS["blue"]) for _ in range(4)])
    npz = tmp_path / "s.npz"
    np.savez(npz, arr_0=imgs, labels=np.array([0, 0, 1, 1]))  # two right, two wrong
    rc = main(["class-consistency", "--samples", str(npz), "--data", str(colours), "--encoder-weights", "random",
               "--input-size", "32", "--train-per-class", "8", "--val-per-class", "5", "--out", str(tmp_path / "r.json")])
    assert rc == 0
    m = json.loads((tmp_path / "r.json").read_text())["metrics"]
    assert m["class_consistency"] == 0.5 and m["real_val_top1"] == 1.0 and m["num_real_val"] == 10
    assert m["per_class"] == {"blue": 1.0, "red": 0.0}
    np.savez(npz, arr_0=imgs)
    assert main(["class-consistency", "--samples", str(npz), "--data", str(colours)]) == 2
    assert "no 'labels' array" in capsys.readouterr().err
