"""Presets: the paper's configuration matches the reference parameter counts and builds with random DINOv2 weights."""

import pytest
import torch

from vfmtok.encoders.base import EncoderSpec, FrozenEncoder
from vfmtok.tokenizer.build import build_tokenizer
from vfmtok.tokenizer.config import PRESETS, get_preset


class ShapeOnlyDINOv2L(FrozenEncoder):
    """Declares DINOv2-L/14's four 24x24x1024 levels at 336 px without building its 304M parameters."""

    def __init__(self):
        super().__init__(EncoderSpec("shape", 336, (0.5,) * 3, (0.5,) * 3, ["b6", "b12", "b18", "norm"], [1024] * 4, [14] * 4, 1024, 14), False)
        self._freeze()


def count(module):
    return sum(p.numel() for p in module.parameters())


def test_paper_preset_parameter_counts_match_reference():
    m = build_tokenizer(get_preset("vfmtok-paper").model, encoder=ShapeOnlyDINOv2L())
    # Reference doc 1.11 (arithmetic from the official code's module shapes), in millions.
    assert count(m.region.projectors) / 1e6 == pytest.approx(3.16, abs=0.01)
    assert count(m.region.layers) / 1e6 == pytest.approx(16.96, abs=0.01)
    assert count(m.decoder) / 1e6 == pytest.approx(19.90, abs=0.01)
    assert count(m.pixel_decoder) / 1e6 == pytest.approx(32.80, abs=0.01)
    assert sum(v.numel() for v in m.trainable_state_dict().values()) / 1e6 == pytest.approx(73.3, abs=0.1)
    assert m.num_tokens == 256 and m.token_grid == (16, 16) and m.decoder.pixel_grid == (21, 21)


def test_paper_preset_builds_with_random_dinov2_at_reduced_input():
    cfg = get_preset("vfmtok-paper").model
    cfg.encoder_pretrained = False
    cfg.encoder_input_size = 56  # 4x4 patches instead of 24x24, same architecture
    cfg.image_size = 64
    m = build_tokenizer(cfg).train()
    assert m.encoder.spec.name == "dinov2_vitl14_reg" and len(m.level_ids) == 4
    out = m(torch.rand(1, 3, 64, 64) * 2 - 1)
    assert out.recon.shape == (1, 3, 64, 64) and out.indices.shape == (1, 256)
    assert out.feature_pred.shape == out.feature_target.shape == (1, 1024, 4, 4)


@pytest.mark.parametrize("name", [n for n in PRESETS if n != "vfmtok-paper"])
def test_small_presets_build(name):
    cfg = get_preset(name).model
    cfg.encoder_pretrained = False
    m = build_tokenizer(cfg).eval()
    x = torch.rand(1, 3, cfg.image_size, cfg.image_size) * 2 - 1
    assert m.decode(m.encode(x)).shape == x.shape


@pytest.mark.parametrize("name", ["vfmtok-cpu-64", "vfmtok-cpu-128", "vfmtok-cpu-64-t256"])
def test_cpu_presets_decode_from_the_token_grid(name):
    # The ViT decoder's mask grid equals the anchor grid, so anchor init hands each mask token exactly one token.
    cfg = get_preset(name).model
    cfg.encoder_pretrained = False
    m = build_tokenizer(cfg)
    assert m.decoder.pixel_grid == m.token_grid == (int(cfg.num_tokens**0.5),) * 2
