"""VFMTok / VQGAN tokenizers: shapes, gradients, determinism, save/load, frozen encoder, clear errors."""

import json

import pytest
import torch

from helpers import build_tiny_tokenizer
from vfmtok.tokenizer.api import VFMTokenizer
from vfmtok.tokenizer.build import build_tokenizer
from vfmtok.tokenizer.config import get_preset
from vfmtok.tokenizer.losses import TokenizerLoss
from vfmtok.utils.errors import VFMTokError


def tiny_cfg(arch="vfmtok"):
    cfg = get_preset("tiny")
    cfg.model.arch = arch
    cfg.model.encoder_pretrained = False
    return cfg


def images(n=2, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, size, size, generator=g) * 2 - 1


@pytest.mark.parametrize("arch", ["vfmtok", "vqgan"])
def test_encode_decode_shapes_dtypes_and_determinism(arch):
    torch.manual_seed(0)
    m = build_tokenizer(tiny_cfg(arch).model).eval()
    x = images(3)
    ids = m.encode(x)
    assert ids.shape == (3, 16) and ids.dtype == torch.int64
    assert 0 <= ids.min() and ids.max() < 64
    y = m.decode(ids)
    assert y.shape == x.shape and y.dtype == torch.float32 and y.abs().max() <= 1
    assert torch.equal(m.decode(m.encode(x)), y)  # eval mode is deterministic


def test_gradients_reach_queries_offsets_codebook_decoder_but_not_encoder():
    torch.manual_seed(0)
    cfg = tiny_cfg()
    m = build_tokenizer(cfg.model).train()
    loss_fn = TokenizerLoss(cfg.loss, 32)
    x = images(2)
    out = m(x)
    total, logs = loss_fn.generator_loss(x, out, step=0)
    total.backward()
    assert "feature" in logs and logs["feature"] > 0  # dual reconstruction is active in training
    for name in ["region.queries", "region.query_pos", "region.layers.0.cross.sampling_offsets.weight",
                 "quantizer.embedding.weight", "decoder.mask_pixel", "decoder.feature_head.weight",
                 "pixel_decoder.conv_in.weight", "region.projectors.0.0.weight"]:
        p = dict(m.named_parameters())[name]
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    enc = [p for p in m.encoder.parameters()]
    assert enc and all(p.grad is None and not p.requires_grad for p in enc)
    m.train()
    assert not m.encoder.training  # parent's .train() does not switch the frozen encoder


def test_feature_branch_runs_only_in_training():
    m = build_tokenizer(tiny_cfg().model)
    x = images(1)
    assert m.train()(x).feature_pred is not None
    assert m.eval()(x).feature_pred is None


def test_save_load_roundtrip_identical_ids(tmp_path):
    folder = build_tiny_tokenizer(tmp_path / "tok", seed=3)
    a = VFMTokenizer.from_pretrained(folder)
    b = VFMTokenizer.from_pretrained(folder)
    x = images(4, seed=1)
    assert torch.equal(a.encode(x), b.encode(x))
    assert torch.equal(a.decode(a.encode(x)), b.decode(b.encode(x)))
    keys = json.loads((folder / "config.json").read_text())
    assert keys["model_type"] == "vfmtok"
    from safetensors.torch import load_file

    assert not any(k.startswith("encoder.") for k in load_file(str(folder / "model.safetensors")))  # frozen encoder not saved


def test_loads_with_torch_weights_only(tmp_path):
    # The resume state must be readable with weights_only=True as well.
    from vfmtok.utils.io import load_train_state, save_train_state

    save_train_state(tmp_path / "s.pt", {"step": 3, "model": {"w": torch.ones(2)}, "optimizer": {"state": {}, "param_groups": [{"lr": 0.1, "params": [0]}]}})
    assert load_train_state(tmp_path / "s.pt")["step"] == 3


def test_wrong_image_size_and_bad_ids_give_clear_errors(tiny_tokenizer_dir):
    tok = VFMTokenizer.from_pretrained(tiny_tokenizer_dir)
    with pytest.raises(VFMTokError, match=r"expected images of shape \(B, 3, 32, 32\)"):
        tok.encode(images(1, size=48))
    with pytest.raises(VFMTokError, match="ids must lie in"):
        tok.decode(torch.full((1, 16), 64))
    with pytest.raises(VFMTokError, match=r"expected ids of shape \(B, 16\)"):
        tok.decode(torch.zeros(1, 15, dtype=torch.long))


def test_checkpoint_of_another_model_is_refused(tmp_path, tiny_tokenizer_dir):
    other = build_tiny_tokenizer(tmp_path / "vq", arch="vqgan")
    cfg = json.loads((other / "config.json").read_text())
    cfg["config"]["model"]["arch"] = "vfmtok"  # config says VFMTok, weights are a VQGAN's
    (other / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(VFMTokError, match="does not match this architecture"):
        VFMTokenizer.from_pretrained(other)
    (tmp_path / "gpt").mkdir()
    (tmp_path / "gpt" / "config.json").write_text(json.dumps({"model_type": "gpt", "config": {}}))
    with pytest.raises(VFMTokError, match="holds a 'gpt' checkpoint"):
        VFMTokenizer.from_pretrained(tmp_path / "gpt")
    with pytest.raises(VFMTokError, match="checkpoint not found"):
        VFMTokenizer.from_pretrained(tmp_path / "missing")


def test_sampling_locations_start_on_the_anchor_grid():
    m = build_tokenizer(tiny_cfg().model).eval()
    loc, w = m.sampling_locations(images(1))
    B, N, H, L, P, _ = loc.shape
    assert (B, N) == (1, 16) and torch.allclose(w.sum(dim=(-2, -1)), torch.ones(1, 16, H))
    # At init the offsets are fixed rays around each anchor: the mean location over heads is the anchor itself.
    centre = loc.mean(dim=(2, 4))[0, :, 0]
    from vfmtok.tokenizer.layers import grid_centres

    assert torch.allclose(centre, grid_centres(4, 4), atol=1e-5)


def test_anchor_init_places_each_token_on_its_own_mask_cell():
    """With no blocks, mask cell j = norm(mask + pos_j) + norm(token_j + token_pos_j): token i reaches cell i only."""
    from vfmtok.tokenizer.vit_decoder import ViTDecoder

    torch.manual_seed(0)
    dec = ViTDecoder(16, 0, 2, 9, (3, 3), (3, 3), None, anchor_init=True).eval()
    tokens = torch.randn(1, 9, 16)
    base, _ = dec.forward_pixels(tokens)
    bumped = tokens.clone()
    bumped[0, 4] += torch.randn(16)  # not a constant shift, which the LayerNorm would remove
    diff = (dec.forward_pixels(bumped)[0] - base).abs().sum(dim=1)[0]  # (3, 3) change per cell
    assert diff[1, 1] > 0.1 and diff.flatten()[[0, 1, 2, 3, 5, 6, 7, 8]].max() == 0
    plain = ViTDecoder(16, 0, 2, 9, (3, 3), (3, 3), None, anchor_init=False).eval()
    assert (plain.forward_pixels(bumped)[0] - plain.forward_pixels(tokens)[0]).abs().max() == 0  # needs attention


def test_anchor_init_interpolates_tokens_to_a_finer_mask_grid():
    from vfmtok.tokenizer.vit_decoder import ViTDecoder

    dec = ViTDecoder(8, 0, 2, 4, (4, 4), (4, 4), None, anchor_init=True).eval()
    tokens = torch.zeros(1, 4, 8)
    tokens[0, 0] = torch.arange(8.0)  # top-left anchor only
    diff = (dec.forward_pixels(tokens)[0] - dec.forward_pixels(torch.zeros(1, 4, 8))[0]).abs().sum(dim=1)[0]
    assert diff[0, 0] > diff[1, 1] > 0 and diff[3, 3] == 0  # bilinear: strongest under the anchor, none far away
