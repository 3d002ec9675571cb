"""Feature cache: exact (fp16) copies of fresh encoder output, views, compatibility errors, resumable build."""

import numpy as np
import pytest
import torch

import vfmtok.data.feature_cache as cache_mod
from vfmtok.data.imagefolder import ImageFolderDataset, center_crop_resize, to_tensor
from vfmtok.data.sources import resolve_dataset
from vfmtok.encoders import create_encoder
from vfmtok.data.feature_cache import CachedFeatureDataset, build_feature_cache, check_compatible
from vfmtok.utils.errors import VFMTokError

SIZE = 64


@pytest.fixture(scope="module")
def dataset():
    return ImageFolderDataset(resolve_dataset("sample"), SIZE, split="val", limit_per_class=2)  # 20 images


@pytest.fixture(scope="module")
def encoder():
    return create_encoder("alexnet_imagenet", image_size=SIZE)


@pytest.fixture(scope="module")
def built(tmp_path_factory, dataset, encoder):
    return build_feature_cache(encoder, dataset, tmp_path_factory.mktemp("fc") / "cache", views=2, batch_size=8, seed=3)


def _close_fp16(cached: torch.Tensor, fresh: torch.Tensor) -> None:
    # float16 keeps 11 significant bits: relative error <= 2^-11 ~ 4.9e-4 (plus subnormals near 0)
    torch.testing.assert_close(cached, fresh, rtol=1e-3, atol=1e-3 * fresh.abs().max().item())


def test_cached_features_equal_fresh_ones(built, dataset, encoder):
    ds0 = CachedFeatureDataset(built, view=0)
    ds1 = CachedFeatureDataset(built, view=1)
    assert len(ds0) == len(dataset) == 20 and ds0.encoder_name == "alexnet_imagenet"
    assert ds0.classes == dataset.classes
    for i in (0, 7, 19):
        img0, label, levels, target = ds0[i]
        # view 0 is the dataset's deterministic centre crop, stored exactly (uint8)
        assert torch.equal(img0, to_tensor(center_crop_resize(dataset.read(i), SIZE)))
        assert torch.equal(img0, dataset[i][0]) and label == dataset[i][1]
        fresh = encoder(img0[None])
        assert len(levels) == 3
        for lv, fl in zip(levels, fresh.levels):
            assert lv.dtype == torch.float32
            _close_fp16(lv, fl[0])
        _close_fp16(target, fresh.target[0])
        # view 1 is a different (random crop/flip) image, and its features are its own
        img1, _, levels1, _ = ds1[i]
        assert (img1 - img0).abs().mean() > 0.01
        _close_fp16(levels1[-1], encoder(img1[None]).levels[-1][0])


def test_random_view_per_epoch_and_loader(built, encoder):
    ds = CachedFeatureDataset(built)
    first = torch.stack([ds[i][0] for i in range(len(ds))])
    ds.set_epoch(1)
    second = torch.stack([ds[i][0] for i in range(len(ds))])
    changed = (first - second).flatten(1).abs().amax(1) > 0
    assert 0 < changed.sum() < len(ds)  # a coin per image: some switch view, some keep it
    img, label, levels, target = next(iter(torch.utils.data.DataLoader(ds, batch_size=4)))
    assert img.shape == (4, 3, SIZE, SIZE) and label.shape == (4,)
    assert [tuple(t.shape) for t in levels] == [(4, 192, 7, 7), (4, 384, 3, 3), (4, 256, 3, 3)]
    assert [tuple(t.shape[1:]) for t in levels] == encoder.level_shapes()
    assert target.shape == (4, *encoder.target_shape())


def test_mismatched_encoder_is_reported(built, encoder):
    check_compatible(built, encoder, image_size=SIZE)
    CachedFeatureDataset(built).check_compatible(create_encoder("alexnet_imagenet", image_size=SIZE))
    with pytest.raises(VFMTokError, match="built with encoder 'alexnet_imagenet' at 64 px, not 'vgg16_imagenet' at 64 px"):
        check_compatible(built, create_encoder("vgg16_imagenet", pretrained=False, image_size=SIZE))
    with pytest.raises(VFMTokError, match="at 64 px, not 'alexnet_imagenet' at 96 px"):
        check_compatible(built, create_encoder("alexnet_imagenet", image_size=96))
    with pytest.raises(VFMTokError, match=r"other weights .*\(pretrained, .*\(random-init"):
        check_compatible(built, create_encoder("alexnet_imagenet", pretrained=False, image_size=SIZE))
    with pytest.raises(VFMTokError, match="holds 64 px images, expected 128 px"):
        check_compatible(built, encoder, image_size=128)


def test_interrupted_build_resumes_and_matches(tmp_path, built, dataset, encoder, monkeypatch):
    path = tmp_path / "c2"
    real = cache_mod.view_image
    calls = []

    def failing(ds, i, v, seed):
        if i >= 12:
            raise KeyboardInterrupt  # like a Ctrl-C in the middle of the build
        calls.append(i)
        return real(ds, i, v, seed)

    monkeypatch.setattr(cache_mod, "view_image", failing)
    with pytest.raises(KeyboardInterrupt):
        build_feature_cache(encoder, dataset, path, views=2, batch_size=4, seed=3)
    assert not path.exists()  # never a half-built cache at the final path
    with pytest.raises(VFMTokError, match="half-built cache"):
        CachedFeatureDataset(path)

    def counting(ds, i, v, seed):
        calls.append(i)
        return real(ds, i, v, seed)

    calls.clear()
    monkeypatch.setattr(cache_mod, "view_image", counting)
    build_feature_cache(encoder, dataset, path, views=2, batch_size=4, seed=3)
    assert min(calls) == 12 and len(calls) == (20 - 12) * 2  # only the missing images were encoded
    for name in ["images", "labels", "level0", "level1", "level2"]:
        assert np.array_equal(np.load(path / f"{name}.npy"), np.load(built / f"{name}.npy")), name
    assert not (path.parent / ".c2.partial").exists()

    calls.clear()
    build_feature_cache(encoder, dataset, path, views=2, batch_size=4, seed=3)  # same settings: reused as is
    assert calls == []
    with pytest.raises(VFMTokError, match="overwrite=True"):
        build_feature_cache(encoder, dataset, path, views=1, seed=3)
    build_feature_cache(encoder, dataset, path, views=1, seed=3, overwrite=True)
    assert CachedFeatureDataset(path).views == 1


def test_partial_cache_with_other_settings_restarts_cleanly(tmp_path, dataset, encoder, monkeypatch):
    path = tmp_path / "c3"
    real = cache_mod.view_image

    def failing(ds, i, v, seed):
        if i >= 8:
            raise KeyboardInterrupt
        return real(ds, i, v, seed)

    monkeypatch.setattr(cache_mod, "view_image", failing)
    with pytest.raises(KeyboardInterrupt):
        build_feature_cache(encoder, dataset, path, views=2, batch_size=4, seed=3)
    monkeypatch.setattr(cache_mod, "view_image", real)
    build_feature_cache(encoder, dataset, path, views=1, batch_size=4, seed=5)
    ds = CachedFeatureDataset(path, view=0)
    assert ds.views == 1 and len(ds) == 20
    _close_fp16(ds[15][2][0], encoder(ds[15][0][None]).levels[0][0])


def test_bad_arguments(tmp_path, dataset, encoder):
    with pytest.raises(VFMTokError, match="views must be >= 1"):
        build_feature_cache(encoder, dataset, tmp_path / "x", views=0)
    with pytest.raises(VFMTokError, match="needs a dataset with read"):
        build_feature_cache(encoder, [(torch.zeros(3, 8, 8), 0)], tmp_path / "x")
    with pytest.raises(VFMTokError, match="not a feature cache"):
        CachedFeatureDataset(tmp_path)
