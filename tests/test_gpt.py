"""GPT model: preset sizes, KV-cache decoding == full pass, RoPE, label dropout, checkpoints."""

import math

import pytest
import torch

from vfmtok.generator.gpt import GPT, GPT_PRESETS, GPTConfig, apply_rope, count_params, create_gpt, preset_config, rope_table
from vfmtok.train.common import save_checkpoint
from vfmtok.utils.errors import VFMTokError
from vfmtok.utils.pretrained import save_pretrained

# Reference section 2.1: layers / heads / dim / FFN hidden / params (M, vocab 16384, 1000 classes).
PAPER = {
    "GPT-B": (12, 12, 768, 2048, 110.9),
    "GPT-L": (24, 16, 1024, 2816, 342.9),
    "GPT-XL": (36, 20, 1280, 3584, 774.7),
    "GPT-XXL": (48, 24, 1536, 4096, 1411),
    "GPT-2B": (48, 32, 1920, 5120, 2188),
    "GPT-3B": (24, 32, 3200, 8704, 3097),
}


def tiny(**kw) -> GPT:
    """A small random GPT whose head is not zero (so logits carry information)."""
    cfg = dict(vocab_size=50, num_tokens=12, token_grid=(3, 4), num_classes=5, token_dropout=0.0,
               resid_dropout=0.0, ffn_dropout=0.0)
    torch.manual_seed(0)
    m = create_gpt("GPT-nano", **{**cfg, **kw})
    torch.nn.init.normal_(m.head.weight, std=0.5)
    return m.eval()


@pytest.mark.parametrize("name", list(PAPER))
def test_preset_sizes_match_reference(name):
    layers, heads, dim, hidden, params_m = PAPER[name]
    cfg = preset_config(name)
    assert (cfg.n_layer, cfg.n_head, cfg.dim, cfg.ffn_hidden) == (layers, heads, dim, hidden)
    with torch.device("meta"):  # no memory for 3B parameters
        n_meta = sum(p.numel() for p in GPT(cfg).parameters())
    assert n_meta == count_params(cfg)
    assert abs(n_meta / 1e6 - params_m) < 0.05 + 5e-4 * params_m


def test_every_preset_builds_and_tiny_presets_are_small():
    for name in GPT_PRESETS:
        preset_config(name).validate()
    assert count_params(preset_config("GPT-nano", vocab_size=64, num_tokens=16, token_grid=(4, 4))) < 200_000
    with pytest.raises(VFMTokError, match="unknown GPT preset"):
        create_gpt("GPT-Z")


@pytest.mark.parametrize("bad, msg", [(dict(dim=66, n_head=4), "divisible"), (dict(token_grid=(4, 5)), "token_grid"),
                                      (dict(rope="3d"), "rope"), (dict(dim=72, n_head=4), "head_dim")])
def test_config_validation(bad, msg):
    with pytest.raises(VFMTokError, match=msg):
        GPT(GPTConfig(**{**dict(dim=64, n_head=2, num_tokens=16, token_grid=(4, 4), vocab_size=8), **bad}))


def test_initial_loss_is_log_vocab():
    m = create_gpt("GPT-nano", vocab_size=50, num_tokens=12, token_grid=(3, 4), num_classes=5)
    ids = torch.randint(0, 50, (2, 12))
    _, loss = m(torch.tensor([0, 3]), ids[:, :-1], targets=ids)
    assert abs(loss.item() - math.log(50)) < 1e-5  # zero-initialised head -> uniform predictions


@pytest.mark.parametrize("rope", ["2d", "1d"])
def test_kv_cache_decoding_matches_full_forward(rope):
    m = tiny(rope=rope)
    labels, ids = torch.tensor([0, 4, 2]), torch.randint(0, 50, (3, 12))
    full, _ = m(labels, ids[:, :-1])
    assert full.shape == (3, 12, 50)
    m.setup_caches(4, 13)
    steps = [m(labels, input_pos=torch.tensor([0]))[0]]
    for t in range(1, 12):
        steps.append(m(None, ids[:, t - 1: t], input_pos=torch.tensor([t]))[0])
    assert (torch.cat(steps, 1) - full).abs().max().item() < 1e-4
    # A multi-token prefill (class + 5 ids at once), then single steps, agrees too.
    chunk, _ = m(labels, ids[:, :5], input_pos=torch.arange(6))
    nxt, _ = m(None, ids[:, 5:6], input_pos=torch.tensor([6]))
    assert (torch.cat([chunk, nxt], 1) - full[:, :7]).abs().max().item() < 1e-4
    assert full.std() > 0.1  # the comparison is not between zeros


def test_apply_rope_rotates_each_pair():
    torch.manual_seed(0)
    x, angle = torch.randn(2, 3, 4, 8), torch.rand(3, 4) * 6.28  # (B, T, H, D), one angle per position and pair
    rot = torch.stack([angle.cos(), angle.sin()], dim=-1)
    c, s = angle.cos()[None, :, None], angle.sin()[None, :, None]
    x0, x1 = x[..., 0::2], x[..., 1::2]
    want = torch.stack([x0 * c - x1 * s, x1 * c + x0 * s], dim=-1).flatten(-2)
    torch.testing.assert_close(apply_rope(x, rot), want, rtol=1e-5, atol=1e-6)
    qkv = torch.randn(2, 3, 3, 4, 8)  # a strided q / k / v slice, as Attention passes it
    torch.testing.assert_close(apply_rope(qkv[:, :, 1], rot), apply_rope(qkv[:, :, 1].contiguous(), rot))


def test_rope_2d_depends_on_row_and_column_offsets_only():
    cfg = GPTConfig(dim=32, n_head=2, num_tokens=20, token_grid=(4, 5), vocab_size=8)
    rot = rope_table(cfg)
    assert rot.shape == (21, 8, 2) and rot[0].abs().sum() == 0  # class token: zeros
    assert torch.allclose(rot[1:].norm(dim=-1), torch.ones(20, 8))  # pure rotations elsewhere
    torch.manual_seed(0)
    q, k = torch.randn(1, 1, 1, 16), torch.randn(1, 1, 1, 16)

    def score(p, r):  # grid positions (row, col) -> sequence rows 1 + row * 5 + col
        i, j = 1 + p[0] * 5 + p[1], 1 + r[0] * 5 + r[1]
        return (apply_rope(q, rot[i: i + 1]) * apply_rope(k, rot[j: j + 1])).sum().item()

    assert score((0, 0), (1, 2)) == pytest.approx(score((2, 1), (3, 3)), abs=1e-5)
    assert score((1, 4), (0, 1)) == pytest.approx(score((3, 3), (2, 0)), abs=1e-5)
    assert abs(score((0, 0), (1, 2)) - score((0, 0), (2, 1))) > 1e-3  # rows and columns are told apart
    # 1D RoPE would see (0,4)->(1,0) as a single raster step, like (0,0)->(0,1); 2D RoPE does not.
    assert abs(score((0, 4), (1, 0)) - score((0, 0), (0, 1))) > 1e-3


def test_dropped_labels_use_the_null_class():
    m = tiny(class_dropout_prob=1.0)
    labels, ids = torch.tensor([0, 1, 2]), torch.randint(0, 50, (3, 11))
    null_logits, _ = m(torch.full((3,), m.null_class), ids)
    cond_logits, _ = m(labels, ids)
    m.train()
    dropped, _ = m(labels, ids)
    assert torch.allclose(dropped, null_logits, atol=1e-6)
    assert (cond_logits - null_logits).abs().max() > 1e-3
    m.config.class_dropout_prob = 0.0
    kept, _ = m(labels, ids)
    assert torch.allclose(kept, cond_logits, atol=1e-6)


def test_save_load_round_trip(tmp_path):
    m = tiny()
    m.class_names, m.tokenizer_info = [f"c{i}" for i in range(5)], {"checkpoint_hash": "abc", "codebook_size": 50}
    m.save_pretrained(tmp_path / "ck")
    save_checkpoint(tmp_path / "run", 7, m.state_dict(), m.export_config(), "gpt", {"step": 7})
    labels, ids = torch.tensor([1, 2]), torch.randint(0, 50, (2, 11))
    ref, _ = m(labels, ids)
    for path in (tmp_path / "ck", tmp_path / "run"):
        m2 = GPT.from_pretrained(path)
        assert not m2.training and m2.config == m.config
        assert m2.class_names == m.class_names and m2.tokenizer_info == m.tokenizer_info
        assert torch.equal(m2(labels, ids)[0], ref)


@pytest.mark.parametrize("arch", ["gpt", "rar"])
def test_loading_builds_on_meta_draws_no_random_numbers_and_computes_rope(tmp_path, arch):
    from vfmtok.generator.checkpoint import load_generator
    from vfmtok.generator.rar import create_rar

    m = tiny() if arch == "gpt" else create_rar("RAR-nano", vocab_size=50, num_tokens=12, token_grid=(3, 4),
                                                              num_classes=5).eval()
    m.save_pretrained(tmp_path / "ck", dtype=torch.float16)
    torch.manual_seed(123)
    before = torch.get_rng_state()
    m2 = load_generator(tmp_path / "ck")
    assert torch.equal(torch.get_rng_state(), before)  # no random init was drawn and thrown away
    tensors = list(m2.parameters()) + list(m2.buffers()) + ([m2.rope] if arch == "gpt" else [])
    assert all(t.device.type == "cpu" for t in tensors)  # nothing left on the meta device
    assert {p.dtype for p in m2.parameters()} == {torch.float32}  # fp16 file, fp32 model (as a copy-load gives)
    if arch == "gpt":
        torch.testing.assert_close(m2.rope, rope_table(m2.config), rtol=0, atol=0)  # computed, not loaded
    labels, ids = torch.tensor([1, 2]), torch.randint(0, 50, (2, 11))
    half = {k: v.half().float() for k, v in m.state_dict().items()}
    m.load_state_dict(half)
    torch.testing.assert_close(m2(labels, ids)[0], m(labels, ids)[0], rtol=0, atol=0)


def test_unreadable_or_wrong_checkpoints_give_clear_errors(tmp_path):
    m = tiny()
    with pytest.raises(VFMTokError, match="not found"):
        GPT.from_pretrained(tmp_path / "missing")
    folder = m.save_pretrained(tmp_path / "bad")
    (folder / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(VFMTokError, match="cannot read"):
        GPT.from_pretrained(folder)
    save_pretrained(tmp_path / "tok", {"w": torch.zeros(1)}, {"model": {}}, "vfmtok")
    with pytest.raises(VFMTokError, match="'vfmtok' checkpoint, expected one of: gpt"):
        GPT.from_pretrained(tmp_path / "tok")
    other = create_gpt("GPT-nano", vocab_size=60, num_tokens=12, token_grid=(3, 4), num_classes=5)
    save_pretrained(tmp_path / "shape", other.state_dict(), m.export_config(), "gpt")
    with pytest.raises(VFMTokError, match="shape mismatch"):
        GPT.from_pretrained(tmp_path / "shape")
    save_pretrained(tmp_path / "cfg", m.state_dict(), {"gpt": {"dim": 64, "colour": 1}}, "gpt")
    with pytest.raises(VFMTokError, match="unknown field"):
        GPT.from_pretrained(tmp_path / "cfg")


def test_bf16_copy_keeps_fp32_rope_and_close_logits():
    m = tiny()
    labels, ids = torch.tensor([1, 3]), torch.randint(0, 50, (2, 11))
    ref, _ = m(labels, ids)
    half = tiny().to(torch.bfloat16)  # what `vfmtok sample` does on a GPU
    assert half.rope.dtype == torch.float32 and half.head.weight.dtype == torch.bfloat16
    torch.testing.assert_close(half.rope, m.rope, rtol=0, atol=0)  # the cast did not coarsen the rotations
    assert "rope" not in half.state_dict()  # a non-persistent buffer: not in checkpoints
    half.setup_caches(2, 12)
    assert half.blocks[0].attention.kv_cache.k.dtype == torch.bfloat16
    out, _ = half(labels, ids)
    assert out.dtype == torch.float32 and (out - ref).abs().max() < 0.05 * ref.abs().max()


def test_cache_attends_over_written_positions_under_the_mask():
    from vfmtok.generator.gpt import KVCache

    torch.manual_seed(0)
    cache = KVCache(4, 24, 2, 16, torch.float32, "cpu")
    assert cache.k.shape == cache.v.shape == (4, 2, 24, 16)
    cache.k.fill_(1e4)  # masked positions must contribute nothing, whatever they hold
    cache.v.fill_(1e4)
    mask = torch.ones(24, 24, dtype=torch.bool).tril()[None, None]
    k, v = torch.randn(3, 2, 19, 16), torch.randn(3, 2, 19, 16)
    q = torch.randn(3, 2, 19, 16)
    pos = torch.arange(15)
    cache.attend(pos, q[:, :, :15], k[:, :, :15], v[:, :, :15], mask[:, :, pos])
    pos = torch.arange(15, 19)  # a multi-token chunk at positions 15..18 with its causal rows of the mask
    out = cache.attend(pos, q[:, :, 15:], k[:, :, 15:], v[:, :, 15:], mask[:, :, pos])
    ref = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)[:, :, 15:]
    assert torch.allclose(out, ref, atol=1e-5)


def test_decode_step_compiles_fullgraph_and_matches_eager():
    """The decode step has no host sync or graph break: torch.compile(fullgraph=True) gives the eager logits."""
    from vfmtok.generator.generate import decode_step

    m = tiny().eval()
    labels, ids = torch.tensor([1, 3]), torch.randint(0, 50, (2, 11))
    m.setup_caches(2, 12)
    with torch.no_grad():
        m(labels, input_pos=torch.zeros(1, dtype=torch.long))
        eager, compiled = [], []
        for t in range(1, 4):
            pos = torch.full((1,), t, dtype=torch.long)
            eager.append(decode_step(m, ids[:, t - 1: t], pos))
        m.clear_caches()
        m.setup_caches(2, 12)
        m(labels, input_pos=torch.zeros(1, dtype=torch.long))
        step = torch.compile(decode_step, fullgraph=True, dynamic=False)
        for t in range(1, 4):
            compiled.append(step(m, ids[:, t - 1: t], torch.full((1,), t, dtype=torch.long)))
    for e, c in zip(eager, compiled):
        torch.testing.assert_close(c, e, rtol=1e-4, atol=1e-4)
