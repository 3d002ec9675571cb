"""`vfmtok import-official`: official-format files (key names and shapes written from the official code) import,
load strictly and compute what the official modules compute (naive references below, from the official code)."""

from __future__ import annotations

import argparse
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vfmtok.cli import main
from vfmtok.official.gpt_import import infer_gpt_config
from vfmtok.utils.errors import VFMTokError

D, HEADS, NC, CODES, CODE_DIM, ENC_DIM, CH = 32, 8, 16, 64, 8, 384, 32
MULT = (1, 1, 2, 2, 4)
IMAGE = 64  # pixel grid 64 / 16 = 4


def _r(*shape, s=0.2):
    return torch.randn(*shape) * s


def _ln(state, k, dim):
    state[f"{k}.weight"], state[f"{k}.bias"] = 1 + _r(dim, s=0.1), _r(dim, s=0.1)


def _lin(state, k, cout, cin, bias=True):
    state[f"{k}.weight"] = _r(cout, cin, s=cin**-0.5)
    if bias:
        state[f"{k}.bias"] = _r(cout, s=0.05)


def _conv(state, k, cout, cin, ks=3):
    state[f"{k}.weight"], state[f"{k}.bias"] = _r(cout, cin, ks, ks, s=(cin * ks * ks) ** -0.5), _r(cout, s=0.05)


def _res(state, k, cin, cout):
    _ln(state, f"{k}.norm1", cin), _conv(state, f"{k}.conv1", cout, cin), _ln(state, f"{k}.norm2", cout)
    _conv(state, f"{k}.conv2", cout, cout)
    if cin != cout:
        _conv(state, f"{k}.nin_shortcut", cout, cin, 1)


def official_tokenizer_state(d: int = D, nc: int = NC, codes: int = CODES, code_dim: int = CODE_DIM,
                             enc_dim: int = ENC_DIM, ch: int = CH, ffn: int = 64, hidden: int = 88, enc_layers: int = 1,
                             dec_layers: int = 1, points: int = 2) -> dict[str, torch.Tensor]:
    """A VQModel state dict with the official names (default: tiny; 4 levels, 8 heads as the official code)."""
    s: dict[str, torch.Tensor] = {}
    e = "encode_transformer"
    for i in range(4):
        _lin(s, f"{e}.projectors.{i}.mlp.0", d, enc_dim, False), _ln(s, f"{e}.projectors.{i}.mlp.1", d)
        _lin(s, f"{e}.projectors.{i}.mlp.3", d, d, False), _ln(s, f"{e}.projectors.{i}.mlp.4", d)
        _ln(s, f"{e}.norm_layers.{i}", d)
    s[f"{e}.carrier_tokens"], s[f"{e}.slots_pos"] = _r(1, nc, d), _r(1, nc, d)
    _ln(s, f"{e}.norm_pre1", d)
    for j in range(enc_layers):
        L = f"{e}.transformer.layers.{j}"
        _lin(s, f"{L}.cross_attn.sampling_offsets", HEADS * 4 * points * 2, d)
        _lin(s, f"{L}.cross_attn.attention_weights", HEADS * 4 * points, d)
        _lin(s, f"{L}.cross_attn.value_proj", d, d), _lin(s, f"{L}.cross_attn.output_proj", d, d)
        for n in ("norm1", "norm2", "norm3"):
            _ln(s, f"{L}.{n}", d)
        _lin(s, f"{L}.linear1", ffn, d), _lin(s, f"{L}.linear2", d, ffn)
        for n in ("q_proj", "k_proj", "v_proj", "out_proj"):
            _lin(s, f"{L}.self_attn.{n}", d, d)
    s["slot_quantize.embedding.weight"] = F.normalize(torch.randn(codes, code_dim), dim=-1)
    s["slot_quantize.codebook_used"] = torch.zeros(65536)
    _lin(s, "pre_slots_quant", code_dim, d), _lin(s, "post_slots_quant", d, code_dim)
    t = "decode_transformer"
    s[f"{t}.position_embedding"], s[f"{t}.slot_position_embedding"] = _r(1, 577, d), _r(1, nc, d)
    for n in ("mask_embedding", "mask_dino", "cls_token"):
        s[f"{t}.{n}"] = _r(1, 1, d)
    s[f"{t}.register_tokens"] = _r(1, 4, d)
    for j in range(dec_layers):
        L = f"{t}.transformer.layers.{j}"
        _ln(s, f"{L}.norm1", d), _ln(s, f"{L}.norm2", d)
        for n in ("q_proj", "k_proj", "v_proj", "out_proj"):
            _lin(s, f"{L}.attn1.{n}", d, d)
        _lin(s, f"{L}.ffnet.w12", 2 * hidden, d), _lin(s, f"{L}.ffnet.w3", d, hidden)
    _ln(s, f"{t}.norm_post1", d), _ln(s, f"{t}.norm_post2", d), _lin(s, f"{t}.proj", enc_dim, d)
    c = ch * MULT[-1]
    _conv(s, "decoder.conv_in", c, d), _res(s, "decoder.mid.0", c, c), _res(s, "decoder.mid.2", c, c)
    _ln(s, "decoder.mid.1.norm", c)
    for n in ("q", "k", "v", "proj_out"):
        _conv(s, f"decoder.mid.1.{n}", c, c, 1)
    for j, lvl in enumerate(reversed(range(len(MULT)))):
        for r in range(2):
            _res(s, f"decoder.conv_blocks.{j}.res.{r}", c, ch * MULT[lvl])
            c = ch * MULT[lvl]
        if lvl:
            _conv(s, f"decoder.conv_blocks.{j}.upsample.conv", c, c)
    _ln(s, "decoder.norm_out", c), _conv(s, "decoder.conv_out", 3, c)
    return s


def facebook_dinov2(dim: int = ENC_DIM, depth: int = 12, regs: int = 4) -> dict[str, torch.Tensor]:
    """A random DINOv2 ViT/14 state dict in facebookresearch's layout (pos_embed has the CLS row; mask_token)."""
    s = {"cls_token": _r(1, 1, dim), "pos_embed": _r(1, 1 + 37 * 37, dim), "mask_token": _r(1, dim)}
    if regs:
        s["register_tokens"] = _r(1, regs, dim)
    s["patch_embed.proj.weight"], s["patch_embed.proj.bias"] = _r(dim, 3, 14, 14, s=0.02), _r(dim, s=0.02)
    for i in range(depth):
        b = f"blocks.{i}"
        _ln(s, f"{b}.norm1", dim), _ln(s, f"{b}.norm2", dim)
        _lin(s, f"{b}.attn.qkv", 3 * dim, dim), _lin(s, f"{b}.attn.proj", dim, dim)
        _lin(s, f"{b}.mlp.fc1", 4 * dim, dim), _lin(s, f"{b}.mlp.fc2", dim, 4 * dim)
        s[f"{b}.ls1.gamma"], s[f"{b}.ls2.gamma"] = _r(dim, s=0.1), _r(dim, s=0.1)
    _ln(s, "norm", dim)
    return s


def _save(path, obj):
    torch.save(obj, path)
    return path


@pytest.fixture(scope="module")
def imported_tokenizer(tmp_path_factory):
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("official_tok")
    state = official_tokenizer_state()
    fb = facebook_dinov2()
    args = argparse.Namespace(image_size=IMAGE, vq_model="VQ-16", codebook_size=CODES)
    tok_pt = _save(root / "vit_vqgan.pt", {"model": state, "ema": state, "steps": 10, "args": args})
    dino = _save(root / "dinov2_vits14_reg4_pretrain.pth", fb)
    out = root / "imported"
    assert main(["import-official", "--tokenizer", str(tok_pt), "--dinov2", str(dino), "--out", str(out)]) == 0
    return state, fb, out, root


def _ln_apply(x, s, k):
    return F.layer_norm(x, x.shape[-1:], s[f"{k}.weight"], s[f"{k}.bias"], 1e-5)


def _lin_apply(x, s, k):
    return F.linear(x, s[f"{k}.weight"], s.get(f"{k}.bias"))


def official_decoder_transformer(s, slots, pixel: bool):
    """`layers.Decoder.forward` (pixel pass) or its training feature pass, written from the official code."""
    d = "decode_transformer"
    B = slots.shape[0]
    memory = slots + s[f"{d}.slot_position_embedding"]
    pos = s[f"{d}.position_embedding"]
    if pixel:
        g = IMAGE // 16
        table = pos[:, 1:].reshape(1, 24, 24, D).permute(0, 3, 1, 2)
        grid = F.interpolate(table, scale_factor=((g + 0.1) / 24, (g + 0.1) / 24), mode="bicubic")
        grid, mask, norm = grid.flatten(2).transpose(1, 2), s[f"{d}.mask_embedding"], "norm_post1"
    else:
        grid, mask, norm = pos[:, 1:], s[f"{d}.mask_dino"], "norm_post2"
    cc = torch.cat([s[f"{d}.cls_token"] + pos[:, :1], mask + grid, s[f"{d}.register_tokens"]], 1).expand(B, -1, -1)
    x = torch.cat([_ln_apply(memory, s, f"{d}.norm_post1"), _ln_apply(cc, s, f"{d}.{norm}")], 1)
    L = f"{d}.transformer.layers.0"
    h = _ln_apply(x, s, f"{L}.norm1")
    q, k, v = (_lin_apply(h, s, f"{L}.attn1.{n}_proj").view(B, -1, HEADS, D // HEADS).transpose(1, 2) for n in "qkv")
    att = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(B, -1, D)
    x = x + _lin_apply(att, s, f"{L}.attn1.out_proj")
    a, b = _lin_apply(_ln_apply(x, s, f"{L}.norm2"), s, f"{L}.ffnet.w12").chunk(2, -1)
    x = x + _lin_apply(F.silu(a) * b, s, f"{L}.ffnet.w3")
    n = grid.shape[1]
    return x[:, NC + 1: NC + 1 + n]


def _gn(x, s, k):
    return F.group_norm(x, 32, s[f"{k}.weight"], s[f"{k}.bias"], 1e-6)


def _res_apply(x, s, k):
    h = F.conv2d(F.silu(_gn(x, s, f"{k}.norm1")), s[f"{k}.conv1.weight"], s[f"{k}.conv1.bias"], padding=1)
    h = F.conv2d(F.silu(_gn(h, s, f"{k}.norm2")), s[f"{k}.conv2.weight"], s[f"{k}.conv2.bias"], padding=1)
    if f"{k}.nin_shortcut.weight" in s:
        x = F.conv2d(x, s[f"{k}.nin_shortcut.weight"], s[f"{k}.nin_shortcut.bias"])
    return x + h


def official_pixel_decoder(s, z):
    """`vq_model.Decoder.forward`, written from the official code."""
    h = F.conv2d(z, s["decoder.conv_in.weight"], s["decoder.conv_in.bias"], padding=1)
    h = _res_apply(h, s, "decoder.mid.0")
    hn = _gn(h, s, "decoder.mid.1.norm")
    q, k, v = (F.conv2d(hn, s[f"decoder.mid.1.{n}.weight"], s[f"decoder.mid.1.{n}.bias"]).flatten(2) for n in "qkv")
    w = torch.softmax(q.transpose(1, 2) @ k * h.shape[1] ** -0.5, dim=2)
    att = (v @ w.transpose(1, 2)).view_as(h)
    h = h + F.conv2d(att, s["decoder.mid.1.proj_out.weight"], s["decoder.mid.1.proj_out.bias"])
    h = _res_apply(h, s, "decoder.mid.2")
    for j in range(len(MULT)):
        h = _res_apply(_res_apply(h, s, f"decoder.conv_blocks.{j}.res.0"), s, f"decoder.conv_blocks.{j}.res.1")
        if j < len(MULT) - 1:
            h = F.conv2d(F.interpolate(h, scale_factor=2.0, mode="nearest"), s[f"decoder.conv_blocks.{j}.upsample.conv.weight"],
                         s[f"decoder.conv_blocks.{j}.upsample.conv.bias"], padding=1)
    return F.conv2d(F.silu(_gn(h, s, "decoder.norm_out")), s["decoder.conv_out.weight"], s["decoder.conv_out.bias"], padding=1)


def test_tokenizer_import_loads_strictly_and_counts_match(imported_tokenizer):
    from vfmtok.tokenizer.api import VFMTokenizer

    state, _, out, _ = imported_tokenizer
    tok = VFMTokenizer.from_pretrained(out)  # strict load of everything but the frozen encoder
    official = sum(v.numel() for k, v in state.items() if k != "slot_quantize.codebook_used")
    assert sum(v.numel() for v in tok.model.trainable_state_dict().values()) == official
    cfg = tok.config
    assert (cfg.encoder, cfg.encoder_input_size, cfg.num_tokens, cfg.width, cfg.codebook_size) == \
        ("dinov2_vits14_reg", 336, NC, D, CODES)
    assert (cfg.dec_pos_interp, cfg.dec_feature_norm, cfg.pix_ch_mult, cfg.pix_res_blocks) == \
        ("dino_offset", "feature", MULT, 2)
    assert (out / "encoder.safetensors").is_file() and cfg.encoder_weights.endswith("encoder.safetensors")
    copy = tok.save_pretrained(out.parent / "copy")  # e.g. `vfmtok export`: the encoder file goes along
    assert (copy / "encoder.safetensors").is_file() and (copy / "README.md").is_file()
    ids = torch.randint(0, CODES, (1, NC))
    assert torch.equal(VFMTokenizer.from_pretrained(copy).decode(ids), tok.decode(ids))


def test_dinov2_mapped_to_timm(imported_tokenizer):
    from vfmtok.tokenizer.api import VFMTokenizer

    _, fb, out, _ = imported_tokenizer
    vit = VFMTokenizer.from_pretrained(out).model.encoder.model
    torch.testing.assert_close(vit.cls_token, fb["cls_token"] + fb["pos_embed"][:, :1], rtol=0, atol=0)
    torch.testing.assert_close(vit.pos_embed, fb["pos_embed"][:, 1:], rtol=0, atol=0)
    torch.testing.assert_close(vit.reg_token, fb["register_tokens"], rtol=0, atol=0)
    torch.testing.assert_close(vit.blocks[3].mlp.fc2.weight, fb["blocks.3.mlp.fc2.weight"], rtol=0, atol=0)


def test_decode_equals_official_decoder(imported_tokenizer):
    from vfmtok.tokenizer.api import VFMTokenizer

    state, _, out, _ = imported_tokenizer
    tok = VFMTokenizer.from_pretrained(out)
    ids = torch.randint(0, CODES, (2, NC), generator=torch.Generator().manual_seed(1))
    s = state
    slots = F.linear(F.normalize(s["slot_quantize.embedding.weight"], dim=-1)[ids], s["post_slots_quant.weight"],
                     s["post_slots_quant.bias"])
    z = official_decoder_transformer(s, slots, pixel=True).transpose(1, 2).reshape(2, D, 4, 4)
    ref = official_pixel_decoder(s, z).clamp(-1, 1)
    got = tok.decode(ids)
    assert got.shape == ref.shape == (2, 3, IMAGE, IMAGE)
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-4)
    # the feature pass (training): CLS, masks and registers through norm_post2, no resize of the 24 x 24 table
    tokens = tok.model.post_quant(tok.model.quantizer.lookup(ids))
    feat = tok.model.decoder.forward_features(tokens)
    ref_feat = _lin_apply(official_decoder_transformer(s, slots, pixel=False), s, "decode_transformer.proj")
    torch.testing.assert_close(feat.flatten(2).transpose(1, 2), ref_feat, rtol=1e-4, atol=1e-4)


def test_paper_shapes_give_the_paper_preset():
    """The released tokenizer's shapes (official config) import as our paper preset, key for key."""
    from test_presets import ShapeOnlyDINOv2L
    from vfmtok.official.tokenizer_import import infer_tokenizer_config, map_tokenizer_state
    from vfmtok.tokenizer.build import build_tokenizer
    from vfmtok.tokenizer.config import get_preset

    with torch.device("meta"):  # shapes only: no 73M random numbers
        s = official_tokenizer_state(d=512, nc=256, codes=16384, code_dim=12, enc_dim=1024, ch=128, ffn=1024,
                                     hidden=1368, enc_layers=6, dec_layers=6, points=4)
        cfg = infer_tokenizer_config(s, {}, "dinov2_vitl14_reg", 1024, 14, "vfmtok-tokenizer.pt")
        mapped = map_tokenizer_state(s, cfg)
    paper = get_preset("vfmtok-paper").model
    for f in ("image_size", "encoder", "encoder_input_size", "num_tokens", "width", "enc_depth", "enc_heads",
              "enc_points", "enc_ffn", "codebook_size", "code_dim", "dec_depth", "dec_heads", "dec_registers",
              "dec_dropout", "pix_ch", "pix_ch_mult", "pix_res_blocks", "dec_pos_interp", "dec_feature_norm"):
        assert getattr(cfg, f) == getattr(paper, f), f
    ours = build_tokenizer(paper, encoder=ShapeOnlyDINOv2L()).trainable_state_dict()
    assert {k: tuple(v.shape) for k, v in mapped.items()} == {k: tuple(v.shape) for k, v in ours.items()}


def test_pos_interp_modes_differ():
    from vfmtok.tokenizer.layers import resize_pos_table

    table = torch.randn(1, 24 * 24, 8)
    a = resize_pos_table(table, (24, 24), (21, 21), "size")
    b = resize_pos_table(table, (24, 24), (21, 21), "dino_offset")
    ref = F.interpolate(table.reshape(1, 24, 24, 8).permute(0, 3, 1, 2), scale_factor=21.1 / 24, mode="bicubic")
    torch.testing.assert_close(b, ref.permute(0, 2, 3, 1).reshape(1, 441, 8), rtol=0, atol=0)
    assert (a - b).abs().max() > 1e-2


def _one_line_error(argv, capsys, *needles):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err, err
    for n in needles:
        assert n in err, err
    return err


def test_tokenizer_bad_inputs(imported_tokenizer, tmp_path, capsys):
    state, fb, _, root = imported_tokenizer
    tok_pt, dino = root / "vit_vqgan.pt", root / "dinov2_vits14_reg4_pretrain.pth"
    out = str(tmp_path / "o")
    data = tok_pt.read_bytes()
    (tmp_path / "trunc.pt").write_bytes(data[: len(data) // 2])
    _one_line_error(["import-official", "--tokenizer", str(tmp_path / "trunc.pt"), "--dinov2", str(dino), "--out", out],
                    capsys, "truncated")

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    _save(tmp_path / "evil.pt", {"ema": state, "args": Evil()})
    _one_line_error(["import-official", "--tokenizer", str(tmp_path / "evil.pt"), "--dinov2", str(dino), "--out", out],
                    capsys, "not allowed", "system")
    gpt = _save(tmp_path / "gpt.pt", {"ema": llamagen_state(), "args": argparse.Namespace(gpt_model="GPT-B")})
    _one_line_error(["import-official", "--tokenizer", str(gpt), "--dinov2", str(dino), "--out", out],
                    capsys, "not an official VFMTok tokenizer", "--gpt")
    big = _save(tmp_path / "vitb.pth", facebook_dinov2(dim=768, depth=12, regs=4))
    _one_line_error(["import-official", "--tokenizer", str(tok_pt), "--dinov2", str(big), "--out", out],
                    capsys, "768", "384")
    odd = _save(tmp_path / "odd.pth", facebook_dinov2(dim=96, depth=2, regs=0))
    _one_line_error(["import-official", "--tokenizer", str(tok_pt), "--dinov2", str(odd), "--out", out],
                    capsys, "embed dim 96", "supported")
    assert not (tmp_path / "o").exists() and not list(tmp_path.glob(".o.*.tmp"))


# ---------------------------------------------------------------- GPT (LlamaGen layout)
G_DIM, G_LAYERS, G_HEADS, G_VOCAB, G_HIDDEN = 64, 2, 2, 50, 256  # find_multiple(int(8 * 64 / 3), 256)


def llamagen_state(rows: int = 11, vocab: int = G_VOCAB) -> dict[str, torch.Tensor]:
    """A tiny LlamaGen Transformer state dict (official names; `rows` class-table rows)."""
    s = {"tok_embeddings.weight": _r(vocab, G_DIM), "cls_embedding.embedding_table.weight": _r(rows, G_DIM),
         "norm.weight": 1 + _r(G_DIM, s=0.1), "output.weight": _r(vocab, G_DIM, s=0.1)}
    for i in range(G_LAYERS):
        p = f"layers.{i}"
        s[f"{p}.attention.wqkv.weight"], s[f"{p}.attention.wo.weight"] = _r(3 * G_DIM, G_DIM), _r(G_DIM, G_DIM)
        s[f"{p}.feed_forward.w1.weight"], s[f"{p}.feed_forward.w3.weight"] = _r(G_HIDDEN, G_DIM), _r(G_HIDDEN, G_DIM)
        s[f"{p}.feed_forward.w2.weight"] = _r(G_DIM, G_HIDDEN, s=0.05)
        s[f"{p}.attention_norm.weight"], s[f"{p}.ffn_norm.weight"] = 1 + _r(G_DIM, s=0.1), 1 + _r(G_DIM, s=0.1)
    return s


def llamagen_logits(s, labels, idx, grid=4):
    """LlamaGen `Transformer.forward` (training path, no dropout), written from the official gpt.py."""
    x = torch.cat([s["cls_embedding.embedding_table.weight"][labels][:, None], s["tok_embeddings.weight"][idx]], 1)
    hd = G_DIM // G_HEADS
    half = hd // 2
    freqs = 1.0 / (10000 ** (torch.arange(0, half, 2)[: half // 2].float() / half))
    f = torch.outer(torch.arange(grid).float(), freqs)
    fg = torch.cat([f[:, None].expand(-1, grid, -1), f[None].expand(grid, -1, -1)], -1).flatten(0, 1)
    cache = torch.cat([torch.zeros(1, half, 2), torch.stack([fg.cos(), fg.sin()], -1)])[: x.shape[1]]

    def rope(t):
        t2 = t.float().reshape(*t.shape[:-1], -1, 2)
        c = cache.view(1, t2.shape[1], 1, half, 2)
        return torch.stack([t2[..., 0] * c[..., 0] - t2[..., 1] * c[..., 1],
                            t2[..., 1] * c[..., 0] + t2[..., 0] * c[..., 1]], -1).flatten(3)

    def rms(t, w):
        return t * torch.rsqrt(t.pow(2).mean(-1, keepdim=True) + 1e-5) * w

    B, T, _ = x.shape
    for i in range(G_LAYERS):
        p = f"layers.{i}"
        q, k, v = F.linear(rms(x, s[f"{p}.attention_norm.weight"]), s[f"{p}.attention.wqkv.weight"]).split(G_DIM, -1)
        q, k, v = rope(q.view(B, T, G_HEADS, hd)), rope(k.view(B, T, G_HEADS, hd)), v.view(B, T, G_HEADS, hd)
        y = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True)
        x = x + F.linear(y.transpose(1, 2).reshape(B, T, G_DIM), s[f"{p}.attention.wo.weight"])
        h = rms(x, s[f"{p}.ffn_norm.weight"])
        x = x + F.linear(F.silu(F.linear(h, s[f"{p}.feed_forward.w1.weight"])) * F.linear(h, s[f"{p}.feed_forward.w3.weight"]),
                         s[f"{p}.feed_forward.w2.weight"])
    return F.linear(rms(x, s["norm.weight"]), s["output.weight"])


@pytest.mark.parametrize("rows", [11, 10])
def test_gpt_import_equals_llamagen(tmp_path, rows):
    from vfmtok.generator.gpt import GPT

    torch.manual_seed(rows)
    s = llamagen_state(rows)
    args = argparse.Namespace(gpt_model="GPT-tiny", num_classes=10, latent_size=4, cls_token_num=1, dropout_p=0.1)
    pt = _save(tmp_path / "c2i.pt", {"model": s, "ema": s, "args": args})
    out = tmp_path / "gpt"
    assert main(["import-official", "--gpt", str(pt), "--n-head", str(G_HEADS), "--out", str(out)]) == 0
    gpt = GPT.from_pretrained(out)
    assert gpt.config.num_classes == 10 and gpt.class_emb.weight.shape[0] == 11
    assert sum(p.numel() for p in gpt.parameters()) == sum(v.numel() for v in s.values()) + (11 - rows) * G_DIM
    if rows == 10:  # built with class dropout 0: a zero null row appended, recorded in the config
        assert gpt.class_emb.weight[10].abs().sum() == 0 and gpt.config.class_dropout_prob == 0
    labels, idx = torch.tensor([3, 7]), torch.randint(0, G_VOCAB, (2, 15))
    ours, _ = gpt(labels, idx)
    torch.testing.assert_close(ours, llamagen_logits(s, labels, idx), rtol=1e-4, atol=1e-4)


def test_fsdp_consolidated_and_preset_inference(tmp_path):
    from vfmtok.generator.gpt import GPT

    s = llamagen_state()
    pt = _save(tmp_path / "consolidated.pth", {f"_orig_mod.{k}": v for k, v in s.items()})  # bare state dict
    out = tmp_path / "gpt"
    assert main(["import-official", "--gpt", str(pt), "--n-head", "2", "--num-tokens", "16", "--out", str(out)]) == 0
    assert GPT.from_pretrained(out).config.num_tokens == 16
    with torch.device("meta"):  # GPT-B shapes without allocating them
        b = {"tok_embeddings.weight": torch.empty(16384, 768), "cls_embedding.embedding_table.weight": torch.empty(1001, 768),
             **{f"layers.{i}.feed_forward.w1.weight": torch.empty(2048, 768) for i in range(12)}}
    cfg, name, appended = infer_gpt_config(b, {}, "c2i_B_256.pt")
    assert (name, cfg.n_head, cfg.num_classes, cfg.num_tokens, appended) == ("GPT-B", 12, 1000, 256, False)
    with pytest.raises(VFMTokError, match="GPT-L"):
        infer_gpt_config(b, {"gpt_model": "GPT-L"}, "x.pt")


def test_gpt_bad_inputs(imported_tokenizer, tmp_path, capsys):
    _, _, _, root = imported_tokenizer
    out = str(tmp_path / "o")
    _one_line_error(["import-official", "--gpt", str(root / "vit_vqgan.pt"), "--out", out], capsys,
                    "not an official LlamaGen/VFMTok GPT", "--tokenizer")
    s = llamagen_state()
    s["layers.0.attention.extra.weight"] = torch.zeros(1)
    pt = _save(tmp_path / "x.pt", {"model": s})
    _one_line_error(["import-official", "--gpt", str(pt), "--which", "model", "--n-head", "2", "--out", out], capsys,
                    "unexpected key")
    _one_line_error(["import-official", "--gpt", str(pt), "--out", out], capsys, "no 'ema'", "--which model")


def test_pair_import_then_sample(imported_tokenizer, tmp_path):
    """--tokenizer and --gpt together: OUT/tokenizer + OUT/generator, and `vfmtok sample` takes the pair."""
    _, _, _, root = imported_tokenizer
    args = argparse.Namespace(gpt_model="GPT-tiny", num_classes=10, latent_size=4, cls_token_num=1)
    gpt_pt = _save(tmp_path / "GPT-tiny.pt", {"ema": llamagen_state(11, vocab=CODES), "args": args})
    out = tmp_path / "pair"
    assert main(["import-official", "--tokenizer", str(root / "vit_vqgan.pt"), "--dinov2",
                 str(root / "dinov2_vits14_reg4_pretrain.pth"), "--gpt", str(gpt_pt), "--n-head", "2",
                 "--out", str(out)]) == 0
    assert (out / "model.json").is_file() and (out / "tokenizer" / "encoder.safetensors").is_file()
    assert main(["sample", "--gpt", str(out / "generator"), "--class", "3", "--per-class", "2", "--device", "cpu",
                 "--cfg-scale", "2.0", "--out", str(tmp_path / "s")]) == 0
    with np.load(tmp_path / "s" / "samples.npz") as z:
        assert z["arr_0"].shape == (2, IMAGE, IMAGE, 3)


def test_imported_rar_through_sample_npz_with_its_cfg_schedule(imported_tokenizer, tmp_path):
    """An official-format RAR imported with its tokenizer samples through `sample-npz --protocol official` with
    --cfg-power: the file holds exactly the images of RAR's schedule (labels and per-batch seeds as documented)."""
    from test_rar import official_rar_state

    from vfmtok.eval.protocol import for_protocol, get_protocol, make_labels
    from vfmtok.generator.checkpoint import load_generator
    from vfmtok.generator.pairing import load_gpt_tokenizer
    from vfmtok.generator.sample import generate_images

    _, _, _, root = imported_tokenizer
    torch.save({f"module.{k}": v * 0.3 for k, v in official_rar_state(vocab=CODES, classes=3, n=16).items()},
               tmp_path / "rar.bin")
    out = tmp_path / "pair"
    assert main(["import-official", "--tokenizer", str(root / "vit_vqgan.pt"), "--dinov2",
                 str(root / "dinov2_vits14_reg4_pretrain.pth"), "--rar", str(tmp_path / "rar.bin"), "--out", str(out)]) == 0
    common = ["sample-npz", "--gpt", str(out / "generator"), "--num-images", "3", "--batch-size", "2", "--device", "cpu",
              "--protocol", "official", "--cfg-scale", "0.5", "--seed", "1"]
    assert main([*common, "--cfg-power", "2.0", "--out", str(tmp_path / "a.npz")]) == 0
    assert main([*common, "--out", str(tmp_path / "b.npz")]) == 0
    rar = load_generator(out / "generator")
    tok = for_protocol(load_gpt_tokenizer(rar, None, torch.device("cpu")), get_protocol("official"))
    labels = make_labels(3, 3, "random", 1)
    want = np.concatenate([generate_images(rar, tok, labels[s: s + 2], 0.5, seed=1 + b, batch_size=2, cfg_power=2.0)
                           for b, s in enumerate((0, 2))])
    with np.load(tmp_path / "a.npz") as a, np.load(tmp_path / "b.npz") as b:
        assert np.array_equal(a["labels"], labels.numpy()), (a["labels"], labels)
        # the same ids; decoding a batch is exact only up to a rounding step of the CPU convolutions
        assert np.abs(a["arr_0"].astype(int) - want).max() <= 1
        assert np.abs(a["arr_0"].astype(int) - b["arr_0"]).mean() > 5  # the schedule changed the samples
