"""Frozen encoders: registry shapes, freezing, ViT level semantics, weight loading, real ImageNet weights."""

from functools import lru_cache

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from vfmtok.data.imagefolder import ImageFolderDataset
from vfmtok.data.sources import resolve_dataset
from vfmtok.encoders import ENCODERS, create_encoder, drop_frozen_state, frozen_prefixes, list_encoders
from vfmtok.encoders.cnn import alexnet_features, read_conv_weights, vgg16_features
from vfmtok.encoders.vit import VIT_MODELS
from vfmtok.utils.errors import VFMTokError


def _test_size(name: str) -> int:
    if name in VIT_MODELS:
        return 56 if "patch14" in VIT_MODELS[name].timm_name else 64
    return 64


@lru_cache(maxsize=None)
def _random_encoder(name: str):
    torch.manual_seed(0)
    return create_encoder(name, pretrained=False, image_size=_test_size(name))


@lru_cache(maxsize=None)
def _sample(split: str, size: int):
    ds = ImageFolderDataset(resolve_dataset("sample"), size, split=split)
    x = torch.stack([ds[i][0] for i in range(len(ds))])
    y = torch.tensor([ds[i][1] for i in range(len(ds))])
    return x, y


@pytest.mark.parametrize("name", [n for n in list_encoders() if n != "hf_dinov2"])
def test_registry_entry_shapes_match_spec(name):
    enc = _random_encoder(name)
    size = _test_size(name)
    spec = enc.spec
    assert spec.name == name and spec.input_size == size
    n = len(spec.level_names)
    assert n >= 3 and len(spec.channels) == n and len(spec.strides) == n
    # a different input size is resized to spec.input_size, so shapes do not change
    for s in (size, size + 12):
        out = enc(torch.rand(2, 3, s, s) * 2 - 1)
        assert [tuple(t.shape) for t in out.levels] == [(2, *shp) for shp in enc.level_shapes()]
        assert tuple(out.target.shape) == (2, *enc.target_shape())
        assert all(t.dtype == torch.float32 and not t.requires_grad for t in out.levels)
    assert [c for c, _, _ in enc.level_shapes()] == spec.channels
    assert enc.target_shape()[0] == spec.target_channels
    assert not enc.training and not any(p.requires_grad for p in enc.parameters())


def test_unknown_encoder_lists_known_names():
    with pytest.raises(VFMTokError, match="known: .*dinov2_vitl14_reg.*vgg16_imagenet"):
        create_encoder("dinov3_huge")
    assert {"dinov2_vits14", "dinov2_vitb14", "dinov2_vitl14_reg", "clip_vitb16", "siglip_vitb16",
            "vgg16_imagenet", "alexnet_imagenet"} <= set(ENCODERS)


def test_paper_default_spec_without_building():
    # The paper's encoder: DINOv2 ViT-L/14-reg4 at 336 px -> 4 levels of 1024 x 24 x 24, blocks 6/12/18/24.
    enc = _random_encoder("dinov2_vitl14_reg")
    assert enc.blocks == [5, 11, 17, 23]
    assert enc.spec.level_names == ["block6", "block12", "block18", "final_norm"]
    assert VIT_MODELS["dinov2_vitl14_reg"].input_size == 336
    assert enc._level_hw(336) == [(24, 24)] * 4 and enc.spec.channels == [1024] * 4


@pytest.mark.parametrize("name", ["vgg16_imagenet", "dinov2_vits14"])
def test_frozen_no_grads_and_stays_eval(name):
    enc = _random_encoder(name)
    parent = nn.Module()
    parent.encoder = enc
    parent.head = nn.Conv2d(enc.spec.target_channels, 4, 1)
    parent.train()
    assert parent.training and parent.head.training
    assert not enc.training and not any(m.training for m in enc.modules())
    size = _test_size(name)
    x = (torch.rand(2, 3, size, size) * 2 - 1).requires_grad_(True)
    out = enc(x)
    loss = parent.head(out.target).pow(2).mean() + sum(lv.mean() for lv in out.levels)
    loss.backward()
    assert parent.head.weight.grad is not None and parent.head.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in enc.parameters())
    # checkpoint filtering: only the trainable head survives
    assert frozen_prefixes(parent) == ["encoder."]
    kept = drop_frozen_state(parent, parent.state_dict())
    assert sorted(kept) == ["head.bias", "head.weight"]


@pytest.mark.parametrize("name", ["dinov2_vitl14_reg", "dinov2_vits14", "siglip_vitb16"])
def test_vit_levels_are_block_outputs_and_final_norm(name):
    enc = _random_encoder(name)
    m = enc.model
    size = _test_size(name)
    torch.manual_seed(1)
    images = torch.rand(2, 3, size, size) * 2 - 1
    out = enc(images)
    x = enc.preprocess(images)
    with torch.no_grad():
        full = m.forward_features(x)  # final-normed tokens, prefix included
        # manual residual stream after block depth/4 (1-indexed)
        t = m.norm_pre(m.patch_drop(m._pos_embed(m.patch_embed(x))))
        for blk in m.blocks[: len(m.blocks) // 4]:
            t = blk(t)
    n_pos = (size // enc.patch) ** 2
    prefix = m.num_prefix_tokens
    assert prefix == (5 if name == "dinov2_vitl14_reg" else (0 if "siglip" in name else 1))
    assert full.shape[1] == n_pos + prefix  # CLS/register tokens exist in the model ...
    last = out.levels[-1].flatten(2).transpose(1, 2)
    assert last.shape[1] == n_pos  # ... and are dropped from the levels
    torch.testing.assert_close(last, full[:, prefix:], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.levels[0].flatten(2).transpose(1, 2), t[:, prefix:], rtol=1e-5, atol=1e-5)
    assert torch.equal(out.target, out.levels[-1])
    # the raw residual stream is not normalised: its per-token std is not ~1 like the final-norm output
    assert not torch.allclose(out.levels[1].std(1), out.levels[-1].std(1), rtol=0.05)


def test_vit_pretrained_missing_weights_names_the_download(tmp_path, monkeypatch):
    import huggingface_hub.constants as hc

    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(VFMTokError, match=r"DINOv2 weights not found.*hf download timm/vit_large_patch14_reg4_dinov2\.lvd142m.*weights_path"):
        create_encoder("dinov2_vitl14_reg", pretrained=True)
    with pytest.raises(VFMTokError, match="CLIP weights not found.*timm/vit_base_patch16_clip_224.openai"):
        create_encoder("clip_vitb16")
    with pytest.raises(VFMTokError, match="weights file not found"):
        create_encoder("dinov2_vits14", weights_path=tmp_path / "nope.safetensors")


def test_vit_loads_weights_from_file_and_hf_cache(tmp_path, monkeypatch):
    import huggingface_hub.constants as hc
    from safetensors.torch import save_file

    src = _random_encoder("dinov2_vits14")
    state = {k: v.contiguous() for k, v in src.model.state_dict().items()}
    f = tmp_path / "w.safetensors"
    save_file(state, str(f))
    enc = create_encoder("dinov2_vits14", weights_path=f, image_size=56)
    assert enc.pretrained and enc.weights_fingerprint() == src.weights_fingerprint()
    x = torch.rand(1, 3, 56, 56) * 2 - 1
    torch.testing.assert_close(enc(x).target, src(x).target)
    # the same file laid out as a Hugging Face cache snapshot is found without any network access
    cache = tmp_path / "hub"
    repo = cache / "models--timm--vit_small_patch14_dinov2.lvd142m"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc123")
    (repo / "snapshots" / "abc123").mkdir(parents=True)
    save_file(state, str(repo / "snapshots" / "abc123" / "model.safetensors"))
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(cache))
    enc2 = create_encoder("dinov2_vits14", image_size=56)
    assert enc2.weights_fingerprint() == src.weights_fingerprint()


def test_vit_rejects_size_not_multiple_of_patch():
    with pytest.raises(VFMTokError, match="multiple of the patch size 14"):
        create_encoder("dinov2_vits14", pretrained=False, image_size=60)


@pytest.mark.parametrize("registers", [0, 4])
def test_hf_dinov2_matches_transformers(tmp_path, registers):
    transformers = pytest.importorskip("transformers")
    if registers:
        cfg = transformers.Dinov2WithRegistersConfig(hidden_size=32, num_hidden_layers=4, num_attention_heads=2,
                                                      intermediate_size=64, patch_size=14, image_size=56,
                                                      num_register_tokens=registers)
        model = transformers.Dinov2WithRegistersModel(cfg).eval()
    else:
        cfg = transformers.Dinov2Config(hidden_size=32, num_hidden_layers=4, num_attention_heads=2,
                                        intermediate_size=64, patch_size=14, image_size=56)
        model = transformers.Dinov2Model(cfg).eval()
    model.save_pretrained(tmp_path)
    enc = create_encoder("hf_dinov2", weights_path=tmp_path, image_size=56)
    assert enc.spec.level_names == ["block1", "block2", "block3", "final_norm"]
    images = torch.rand(2, 3, 56, 56) * 2 - 1
    out = enc(images)
    with torch.no_grad():
        ref = model(pixel_values=enc.preprocess(images), output_hidden_states=True)
    assert [tuple(t.shape) for t in out.levels] == [(2, 32, 4, 4)] * 4
    prefix = 1 + registers
    torch.testing.assert_close(out.levels[-1].flatten(2).transpose(1, 2), ref.last_hidden_state[:, prefix:])
    torch.testing.assert_close(out.levels[1].flatten(2).transpose(1, 2), ref.hidden_states[2][:, prefix:])
    with pytest.raises(VFMTokError, match="hf_dinov2 needs weights_path"):
        create_encoder("hf_dinov2")


# -- ImageNet CNNs ---------------------------------------------------------------------------------------------------


def _layout(seq):
    out = []
    for m in seq:
        if isinstance(m, nn.Conv2d):
            out.append(("conv", m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding))
        elif isinstance(m, nn.MaxPool2d):
            out.append(("pool", m.kernel_size, m.stride))
        else:
            out.append((type(m).__name__,))
    return out


def test_cnn_layout_and_weights_match_torchvision():
    import torchvision

    tv_vgg = torchvision.models.vgg.make_layers(torchvision.models.vgg.cfgs["D"])
    tv_alex = torchvision.models.alexnet(weights=None).features
    for ours, tv, arch in [(vgg16_features(), tv_vgg, "vgg16"), (alexnet_features(), tv_alex, "alexnet")]:
        assert _layout(ours) == _layout(tv)
        loaded = read_conv_weights(arch)
        tv_state = tv.state_dict()
        assert sorted(loaded) == sorted(tv_state)
        assert all(loaded[k].shape == tv_state[k].shape for k in tv_state)
        tv.load_state_dict(loaded)  # a torchvision module takes the converted state as is


def _adjacent_tap_corr(w: torch.Tensor) -> float:
    a, b = w[..., :, :-1].flatten(), w[..., :, 1:].flatten()
    c, d = w[..., :-1, :].flatten(), w[..., 1:, :].flatten()
    return 0.5 * (torch.corrcoef(torch.stack([a, b]))[0, 1] + torch.corrcoef(torch.stack([c, d]))[0, 1]).item()


@pytest.mark.parametrize("name", ["vgg16_imagenet", "alexnet_imagenet"])
def test_first_layer_filters_are_smooth_like_trained_ones(name):
    # Trained first-layer filters are smooth edge/colour detectors: neighbouring taps correlate
    # (measured: VGG16 0.33, AlexNet 0.53). Random init gives ~0, and so does an HWIO->OIHW
    # conversion done with reshape instead of transpose (measured 0.07 / -0.02).
    w = create_encoder(name, image_size=64).features[0].weight
    assert _adjacent_tap_corr(w) > 0.25
    assert abs(_adjacent_tap_corr(_random_encoder(name).features[0].weight)) < 0.1
    scrambled = w.permute(2, 3, 1, 0).contiguous().reshape(w.shape)
    assert _adjacent_tap_corr(scrambled) < 0.15


def _nn1_accuracy(feats: torch.Tensor, y: torch.Tensor) -> float:
    f = F.normalize(feats, dim=1)
    s = f @ f.T
    s.fill_diagonal_(-2.0)
    return (y[s.argmax(1)] == y).float().mean().item()


def _pooled(enc, x, chunk=50):
    return torch.cat([enc(x[i:i + chunk]).target.mean((2, 3)) for i in range(0, len(x), chunk)])


def test_vgg16_relu5_3_groups_images_by_class():
    # Leave-one-out 1-NN over pooled relu5_3 on the 100 sample val images (10 classes) at 64 px:
    # ImageNet weights 0.73; random init / scrambled kernels 0.15-0.17; raw pixels 0.19.
    x, y = _sample("val", 64)
    assert _nn1_accuracy(_pooled(create_encoder("vgg16_imagenet", image_size=64), x), y) > 0.5


def test_alexnet_features_prefer_upright_images():
    # A network is equivalent to its kernels spatially transposed applied to transposed images. ImageNet
    # features are not rotation invariant, so class structure is clearer for upright images
    # (400 sample train images, 96 px: 0.66 upright vs 0.58 transposed). A loader that swapped the
    # kernels' H and W axes would show the opposite; a scrambled one drops to chance.
    x, y = _sample("train", 96)
    enc = create_encoder("alexnet_imagenet", image_size=96)
    upright = _nn1_accuracy(_pooled(enc, x), y)
    transposed = _nn1_accuracy(_pooled(enc, x.transpose(2, 3)), y)
    assert upright > 0.55 and upright > transposed + 0.04
    with torch.no_grad():
        for m in enc.features:
            if isinstance(m, nn.Conv2d):
                m.weight.copy_(m.weight.permute(2, 3, 1, 0).contiguous().reshape(m.weight.shape))
    assert _nn1_accuracy(_pooled(enc, x), y) < 0.35


def test_cnn_accepts_torchvision_state_dict(tmp_path):
    state = {f"features.{k}": v for k, v in read_conv_weights("alexnet").items()}
    torch.save(state, tmp_path / "alexnet-owt.pth")
    a = create_encoder("alexnet_imagenet", image_size=64, weights_path=tmp_path / "alexnet-owt.pth")
    b = create_encoder("alexnet_imagenet", image_size=64)
    assert a.weights_fingerprint() == b.weights_fingerprint()
    torch.save({"x": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises(VFMTokError, match="not a torchvision alexnet state dict"):
        create_encoder("alexnet_imagenet", weights_path=tmp_path / "bad.pth")


def test_cnn_sizes_and_exact_level_shapes():
    with pytest.raises(VFMTokError, match="multiple of 16"):
        create_encoder("vgg16_imagenet", pretrained=False, image_size=100)
    enc = create_encoder("alexnet_imagenet", pretrained=False, image_size=224)
    assert enc.level_shapes() == [(192, 27, 27), (384, 13, 13), (256, 13, 13)]
    out = enc(torch.zeros(1, 3, 224, 224))
    assert [tuple(t.shape[1:]) for t in out.levels] == enc.level_shapes()
    vgg = _random_encoder("vgg16_imagenet")
    assert vgg.level_shapes() == [(256, 16, 16), (512, 8, 8), (512, 4, 4)]
    assert len(vgg.features) == 30  # stops right after relu5_3: no final max-pool
