"""Image sets for evaluation: datasets, flat/nested sample folders, `vfmtok sample` output, npz; subsets."""

import numpy as np
import pytest
from PIL import Image

from vfmtok.eval.imagesets import iter_batches, open_image_set, subset_indices
from vfmtok.utils.errors import VFMTokError


def _images(n, size=24):
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def test_folder_layouts_give_the_same_images(tmp_path):
    arr = _images(5)
    np.savez(tmp_path / "s.npz", arr_0=arr)
    flat, nested, sample_out = tmp_path / "flat", tmp_path / "nested", tmp_path / "run"
    for i, a in enumerate(arr):
        (flat).mkdir(exist_ok=True)
        Image.fromarray(a).save(flat / f"{i:03d}.png")
        (nested / f"c{i % 2}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(a).save(nested / f"c{i % 2}" / f"{i:03d}.png")
    (sample_out / "images").mkdir(parents=True)
    Image.fromarray(arr[0]).save(sample_out / "grid.png")  # must be ignored: the npz is read
    np.savez(sample_out / "samples.npz", arr_0=arr, labels=np.arange(5))
    for spec in (tmp_path / "s.npz", flat, sample_out):
        s = open_image_set(spec, None)
        assert len(s) == 5 and s.resolution == 24
        assert all(np.array_equal(s.read(i), arr[i]) for i in range(5))
    s = open_image_set(nested, None)  # nested sample folders: order by path, same pixels
    assert len(s) == 5 and sorted(s.read(i).sum() for i in range(5)) == sorted(a.sum() for a in arr)
    assert open_image_set(tmp_path / "s.npz", 16).read(0).shape == (16, 16, 3)


def test_dataset_labels_and_batches():
    s = open_image_set("sample", 32, split="val")
    assert len(s) == 100 and s.labels[0] == 0 and s.labels[-1] == 9 and len(s.class_names) == 10
    idx = subset_indices(len(s), 7, seed=3)
    assert len(set(idx.tolist())) == 7 and list(idx) == sorted(idx)
    assert np.array_equal(idx, subset_indices(len(s), 7, seed=3))
    assert not np.array_equal(idx, subset_indices(len(s), 7, seed=4))
    batches = list(iter_batches(s, idx, 3))
    assert [len(b) for b, _ in batches] == [3, 3, 1]
    assert batches[0][0].dtype.is_floating_point is False and batches[0][0].shape == (3, 32, 32, 3)
    assert batches[0][1].tolist() == [s.labels[i] for i in idx[:3]]


def test_bad_sets(tmp_path):
    with pytest.raises(VFMTokError, match="not found"):
        open_image_set(tmp_path / "missing", 32)
    (tmp_path / "empty").mkdir()
    with pytest.raises(VFMTokError, match="no images found"):
        open_image_set(tmp_path / "empty", None)
    np.savez(tmp_path / "f.npz", arr_0=_images(2).astype(np.int16))
    with pytest.raises(VFMTokError, match="uint8"):
        open_image_set(tmp_path / "f.npz", None)
    with pytest.raises(VFMTokError, match="positive"):
        subset_indices(10, 0, 0)
