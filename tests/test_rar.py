"""RAR generator: KV-cache decoding, permuted training pass, r schedule, CFG schedule, presets, checkpoints, e2e."""

import json
import math

import numpy as np
import pytest
import torch

from test_codes import FakeTokenizer, make_image_folder
from vfmtok.cli import main
from vfmtok.data.imagefolder import ImageFolderDataset
from vfmtok.generator.checkpoint import load_generator
from vfmtok.generator.generate import cfg_scale_at, generate
from vfmtok.generator.gpt import GPT
from vfmtok.generator.rar import RAR, RAR_PRESETS, count_rar_params, create_rar, rar_preset_config
from vfmtok.generator.sample import generate_images
from vfmtok.train import generator_arch as A
from vfmtok.train.common import param_groups
from vfmtok.train.extract import extract_codes
from vfmtok.utils.errors import VFMTokError
from vfmtok.utils.images import to_uint8

DATA = dict(vocab_size=50, num_tokens=16, token_grid=(4, 4), num_classes=3)


def nano(seed: int = 0, **kw) -> RAR:
    """RAR-nano with every weight random (adaLN-zero and the zero cls token would hide bugs)."""
    torch.manual_seed(seed)
    m = create_rar("RAR-nano", **{**DATA, **kw})
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(0, 0.3)
    return m.eval()


def test_kv_cache_decoding_equals_full_forward():
    m = nano()
    labels = torch.tensor([0, 2, 1, 3])  # 3 = null class
    ids = torch.randint(0, 50, (4, 16))
    full, _ = m(labels, ids[:, :-1])
    assert full.shape == (4, 16, 50)
    m.setup_caches(4, 17)
    steps = [m(labels, input_pos=torch.zeros(1, dtype=torch.long))[0][:, -1]]
    for t in range(1, 16):
        steps.append(m(None, ids[:, t - 1: t], input_pos=torch.tensor([t]))[0][:, -1])
    assert torch.allclose(torch.stack(steps, 1), full, atol=1e-4, rtol=0)
    # the prefix of a shorter full pass agrees too (causality), and greedy sampling follows the full pass's argmax
    assert torch.allclose(m(labels, ids[:, :5])[0], full[:, :6], atol=1e-5)
    greedy = generate(m, labels, temperature=0)
    assert torch.equal(m(labels, greedy[:, :-1])[0].argmax(-1), greedy)
    assert torch.equal(generate(m, labels, temperature=0, use_cache=False), greedy)


def test_permuted_pass_equals_raster_pass_on_hand_permuted_data():
    m = nano(1)
    perm = torch.randperm(16, generator=torch.Generator().manual_seed(0))
    labels, ids = torch.tensor([1, 0, 2]), torch.randint(0, 50, (3, 16))
    shuffled = ids[:, perm]
    _, loss = m(labels, shuffled[:, :-1], targets=shuffled, orders=perm.expand(3, 16))
    # By hand: a copy whose position tables are re-ordered so that raster slot i holds the rows of token perm[i].
    ref = nano(1)
    with torch.no_grad():
        ref.pos_embed[2:18] = m.pos_embed[2 + perm]
        ref.target_pos_embed[2:18] = m.target_pos_embed[2 + perm]
    _, ref_loss = ref(labels, shuffled[:, :-1], targets=shuffled)
    assert torch.allclose(loss, ref_loss, atol=1e-5)
    _, raster_loss = m(labels, shuffled[:, :-1], targets=shuffled)
    assert not torch.allclose(loss, raster_loss, atol=1e-3)  # the orders do change the pass
    # mixed batch: each row is its own order
    orders = torch.stack([torch.arange(16), perm, perm.flip(0)])
    rows = ids.gather(1, orders)
    logits, _ = m(labels, rows[:, :-1], orders=orders)
    single, _ = m(labels[1:2], rows[1:2, :-1], orders=orders[1:2])
    assert torch.allclose(logits[1:2], single, atol=1e-5)
    assert torch.allclose(logits[:1], m(labels[:1], ids[:1, :-1])[0], atol=1e-5)


def test_permutation_ratio_schedule_and_orders():
    assert A.permute_ratio(0, 100, (0.5, 0.75)) == 1.0 and A.permute_ratio(49, 100, (0.5, 0.75)) == 1.0
    assert A.permute_ratio(60, 100, (0.5, 0.75)) == pytest.approx(0.6)
    assert A.permute_ratio(75, 100, (0.5, 0.75)) == 0.0 and A.permute_ratio(99, 100, (0.5, 0.75)) == 0.0
    raster = A.sample_orders(64, 16, 0.0)
    assert torch.equal(raster, torch.arange(16).expand(64, 16))
    g = torch.Generator().manual_seed(0)
    every = A.sample_orders(64, 16, 1.0, generator=g)
    assert torch.equal(every.sort(-1).values, raster)  # each row a permutation
    assert (every != raster).any(-1).all()  # and every row permuted
    half = A.sample_orders(2000, 16, 0.5, generator=g)
    frac = (half != torch.arange(16)).any(-1).float().mean().item()
    assert 0.45 < frac < 0.55


def test_training_loss_uses_the_permutation_with_probability_r():
    m = nano(2).train()
    m.config.class_dropout_prob = 0.0
    for blk in m.blocks:  # dropout off, so that losses compare
        blk.attn.attn_dropout, blk.attn.proj_drop.p, blk.mlp_drop.p = 0.0, 0.0, 0.0
    labels, ids = torch.tensor([0, 1, 2, 0]), torch.randint(0, 50, (4, 16))
    cfg = type("Cfg", (), {"arch": "rar", "steps": 100, "permute_anneal": (0.5, 0.75)})()
    raster = m(labels, ids[:, :-1], targets=ids)[1]
    assert torch.allclose(A.training_loss(m, cfg, labels, ids, step=80), raster)  # r = 0
    torch.manual_seed(5)
    permuted = A.training_loss(m, cfg, labels, ids, step=0)  # r = 1
    torch.manual_seed(5)
    orders = A.sample_orders(4, 16, 1.0)
    rows = ids.gather(1, orders)
    assert torch.allclose(permuted, m(labels, rows[:, :-1], targets=rows, orders=orders)[1])
    assert not torch.allclose(permuted, raster)


def test_cfg_schedule_endpoints_and_guided_sampling():
    assert cfg_scale_at(0, 256, 16.0, 2.75) == 1.0
    assert cfg_scale_at(256, 256, 16.0, 2.75) == pytest.approx(16.0)
    assert cfg_scale_at(128, 256, 3.0, 1.0) == pytest.approx(2.0)  # half way: cos(pi/2) = 0
    assert cfg_scale_at(10, 256, 4.0, None) == 4.0  # no power: LlamaGen's constant scale
    m = nano(3)
    labels = torch.tensor([0, 2])
    # token 0 has scale 1 under the schedule, so greedy picks the conditional argmax there
    cond0 = m(labels, None)[0][:, 0].argmax(-1)
    ids = generate(m, labels, cfg_scale=8.0, cfg_power=2.0, temperature=0)
    assert torch.equal(ids[:, 0], cond0)
    assert not torch.equal(ids, generate(m, labels, cfg_scale=8.0, temperature=0))


def test_preset_parameter_counts():
    for name in ("RAR-nano", "RAR-tiny"):
        m = create_rar(name, **DATA)
        assert sum(p.numel() for p in m.parameters()) == count_rar_params(m.config)
    # RAR paper / 1d-tokenizer model zoo: counts at the MaskGIT-VQ codebook of 1024 (the VFMTok-RAR README
    # repeats them for its 16384 codebook); our tables lack the reference's unused mask-token row (dim params).
    published = {"RAR-B": 261e6, "RAR-L": 461e6, "RAR-XL": 955e6, "RAR-XXL": 1.5e9}
    for name, count in published.items():
        cfg = rar_preset_config(name, vocab_size=1024, num_tokens=256, token_grid=(16, 16), num_classes=1000)
        n = count_rar_params(cfg) + cfg.dim
        assert abs(n - count) / count < (0.002 if count < 1e9 else 0.01), (name, n)
    big = rar_preset_config("RAR-XXL")
    assert (big.dim, big.n_layer, big.n_head, big.mlp_dim) == (1408, 40, 16, 6144)
    assert count_rar_params(rar_preset_config("RAR-L")) == pytest.approx(493.1e6, rel=1e-3)  # at 16384 codes
    assert set(RAR_PRESETS) >= {"RAR-B", "RAR-L", "RAR-XL", "RAR-XXL", "RAR-tiny"}
    with pytest.raises(VFMTokError, match="unknown RAR preset"):
        rar_preset_config("RAR-Q")


def test_weight_decay_groups_follow_the_reference_trainer():
    # 1d-tokenizer's create_optimizer: no decay on 1-D tensors or names with embed/norm/bias/ln, so the final adaLN
    # ('adaln_before_head') is not decayed and the (1, 1, dim) cls token is
    m = nano()
    decay, no_decay = param_groups(m, 0.03)
    names = {id(p): n for n, p in m.named_parameters()}
    decayed = {names[id(p)] for p in decay["params"]}
    assert {"blocks.0.attn.qkv.weight", "head.weight", "cls_token", "blocks.0.modulation.weight"} <= decayed
    assert not decayed & {"tok_emb.weight", "class_emb.weight", "pos_embed", "target_pos_embed", "step_embed",
                          "blocks.0.attn.qkv.bias", "final_modulation.weight", "blocks.0.attn.q_norm.weight"}
    assert len(decayed) + len(no_decay["params"]) == len(list(m.parameters()))


def test_save_load_round_trip(tmp_path):
    m = nano(4)
    m.class_names, m.tokenizer_info = ["a", "b", "c"], {"checkpoint_path": "../tok", "checkpoint_hash": "h"}
    m.save_pretrained(tmp_path / "r")
    assert json.loads((tmp_path / "r" / "config.json").read_text())["model_type"] == "rar"
    back = load_generator(tmp_path / "r")
    assert isinstance(back, RAR) and back.config == m.config and back.class_names == ["a", "b", "c"]
    assert back.recorded_tokenizer() == (tmp_path / "tok").resolve()
    sd, sd2 = m.state_dict(), back.state_dict()
    assert sd.keys() == sd2.keys() and all(torch.equal(sd[k], sd2[k]) for k in sd)
    labels, ids = torch.tensor([2]), torch.randint(0, 50, (1, 15))
    assert torch.equal(m(labels, ids)[0], back(labels, ids)[0])
    with pytest.raises(VFMTokError, match="holds a 'rar' checkpoint"):
        GPT.from_pretrained(tmp_path / "r")
    GPT(GPT.config_class(**DATA, dim=32, n_layer=1, n_head=2, multiple_of=32)).save_pretrained(tmp_path / "g")
    assert isinstance(load_generator(tmp_path / "g"), GPT)


def test_encode_topk_nearest_first():
    from vfmtok.tokenizer.quantizer import VectorQuantizer

    torch.manual_seed(0)
    q = VectorQuantizer(32, 6)
    z = torch.randn(2, 5, 6)
    top = q.nearest_topk(z, 3)
    assert top.shape == (2, 5, 3) and torch.equal(top[..., 0], q.nearest(z))
    cos = torch.nn.functional.normalize(z, dim=-1) @ q.codebook().t()
    picked = cos.gather(-1, top)
    assert (picked[..., :-1] >= picked[..., 1:]).all()
    assert torch.equal(picked[..., 1], cos.scatter(-1, top[..., :1], -2).max(-1).values)  # 2nd best of all codes


class TopkFake(FakeTokenizer):
    """FakeTokenizer with a second-nearest sequence: ids + 1 (mod codebook)."""

    topk_calls = 0

    def encode_topk(self, images, k):
        TopkFake.topk_calls += 1
        first = self.encode(images)
        return torch.stack([(first + j) % self.codebook_size for j in range(k)], 1)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp("imgs"), per_class=4)


@pytest.mark.slow
def test_end_to_end_codes_train_sample_decode(images, tmp_path, monkeypatch, capsys):
    codes = extract_codes(TopkFake(), ImageFolderDataset(images, 16), tmp_path / "codes", batch_size=5, topk=2)
    index = json.loads((codes / "index.json").read_text())
    assert index["views"] == ["center", "center-flip", "center@2", "center-flip@2"]
    stored = np.load(codes / "codes_00000.npy")
    assert np.array_equal(stored[:, 2], (stored[:, 0].astype(np.int64) + 1) % 64)
    run = tmp_path / "run"
    assert main(["train-generator", "--codes", str(codes), "--out", str(run), "--arch", "rar", "--preset", "RAR-nano",
                 "--steps", "4", "--batch-size", "4", "--log-every", "1", "--device", "cpu"]) == 0
    meta = json.loads((run / "checkpoints" / "step_0000004" / "config.json").read_text())
    assert meta["model_type"] == "rar" and meta["config"]["rar"]["vocab_size"] == 64
    resolved = json.loads((run / "run_config.json").read_text())
    assert resolved["arch"] == "rar" and resolved["lr"] == 4e-4 and resolved["betas"] == [0.9, 0.96]
    assert resolved["weight_decay"] == 0.03 and resolved["lr_schedule"] == "cosine" and resolved["min_lr"] == 1e-5
    assert "step 4 loss" in (run / "train.log").read_text()
    assert main(["train-generator", "--codes", str(codes), "--out", str(run), "--preset", "RAR-nano", "--steps", "6",
                 "--batch-size", "4", "--device", "cpu", "--resume"]) == 0
    assert (run / "latest.txt").read_text().strip() == "step_0000006" and "resumed from" in (run / "train.log").read_text()
    rar = load_generator(run)
    labels = torch.tensor([0, 1, 2])
    imgs = generate_images(rar, FakeTokenizer(), labels, cfg_scale=3.0, cfg_power=1.0, seed=1)
    ids = generate(rar, labels, cfg_scale=3.0, cfg_power=1.0, generator=torch.Generator().manual_seed(1))
    assert np.array_equal(imgs, to_uint8(FakeTokenizer().decode(ids)))
    monkeypatch.setattr("vfmtok.generator.sampling.load_gpt_tokenizer", lambda gpt, path, device: FakeTokenizer())
    out = tmp_path / "s"
    assert main(["sample", "--gpt", str(run), "--per-class", "1", "--cfg-scale", "2", "--cfg-power", "2.75",
                 "--out", str(out), "--device", "cpu"]) == 0
    info = json.loads((out / "sample_info.json").read_text())
    assert info["arch"] == "rar" and info["cfg_power"] == 2.75 and np.load(out / "samples.npz")["arr_0"].shape[0] == 3
    capsys.readouterr()
    assert main(["train-generator", "--codes", str(codes), "--out", str(tmp_path / "x"), "--arch", "rar",
                 "--preset", "GPT-nano"]) == 2
    assert "is a GPT preset, not RAR" in capsys.readouterr().err


def test_on_the_fly_top2_augmentation(images, tmp_path):
    from vfmtok.train.generator import GeneratorTrainConfig, train_generator

    facts = dict(vocab_size=64, num_tokens=16, token_grid=(4, 4), num_classes=3)
    cfg = GeneratorTrainConfig(**{**A.base_fields("RAR-nano", "rar", facts),
                                  **dict(data=str(images), steps=2, batch_size=4, topk_codes=2, device="cpu")})
    before = TopkFake.topk_calls
    train_generator(cfg, tmp_path / "run", tokenizer=TopkFake())
    assert TopkFake.topk_calls - before == 2
    assert math.isfinite(float((tmp_path / "run" / "train.log").read_text().split("step 2 loss ")[1].split()[0]))


def official_rar_state(dim=32, layers=2, head_dim=16, mlp=64, vocab=20, classes=3, n=16, seed=0):
    """A state dict with the official RAR key names and shapes (1d-tokenizer modeling/rar.py), random values."""
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    sd = {"cls_token": r(1, 1, dim), "embeddings.weight": r(vocab + 1 + classes + 1, dim),
          "pos_embed": r(1, n + 1024, dim), "target_aware_pos_embed": r(1, n + 1024, dim),
          "timesteps_embeddings": r(1, n + 100, dim), "lm_head.weight": r(vocab, dim), "lm_head.bias": r(vocab),
          "adaln_before_head.adaLN_modulation.1.weight": r(2 * dim, dim),
          "adaln_before_head.adaLN_modulation.1.bias": r(2 * dim)}
    for i in range(layers):
        shapes = {"norm1": (dim,), "norm2": (dim,), "attn.qkv": (3 * dim, dim), "attn.q_norm": (head_dim,),
                  "attn.k_norm": (head_dim,), "attn.proj": (dim, dim), "mlp.fc1": (mlp, dim), "mlp.fc2": (dim, mlp),
                  "adaLN_modulation.1": (6 * dim, dim)}
        for name, shape in shapes.items():
            sd[f"blocks.{i}.{name}.weight"] = r(*shape)
            sd[f"blocks.{i}.{name}.bias"] = r(shape[0])
    return sd


def test_import_official_rar_state(tmp_path, capsys):
    from safetensors.torch import save_file

    from vfmtok.cli import main
    from vfmtok.official.rar_import import import_rar_state

    sd = official_rar_state()
    cfg, state = import_rar_state({f"module.{k}": v for k, v in sd.items()})
    assert (cfg.dim, cfg.n_layer, cfg.n_head, cfg.mlp_dim, cfg.vocab_size, cfg.num_classes, cfg.num_tokens) == \
        (32, 2, 2, 64, 20, 3, 16)
    assert (cfg.pos_slack, cfg.step_slack, cfg.token_grid) == (1024, 100, (4, 4))
    m = RAR(cfg)
    m.load_state_dict(state, strict=True)
    emb = sd["embeddings.weight"]
    assert torch.equal(m.tok_emb.weight, emb[:20]) and torch.equal(m.class_emb.weight, emb[21:])  # mask row 20 dropped
    assert torch.equal(m.blocks[1].modulation.weight, sd["blocks.1.adaLN_modulation.1.weight"])
    assert torch.equal(m.blocks[0].fc2.bias, sd["blocks.0.mlp.fc2.bias"])
    assert torch.equal(m.final_modulation.bias, sd["adaln_before_head.adaLN_modulation.1.bias"])
    assert torch.equal(m.target_pos_embed, sd["target_aware_pos_embed"][0]) and torch.equal(m.head.bias, sd["lm_head.bias"])
    torch.save({f"module.{k}": v for k, v in sd.items()}, tmp_path / "rar_x.bin")  # 1d-tokenizer's .bin: a DDP state dict
    save_file({k: v.contiguous() for k, v in sd.items()}, str(tmp_path / "rar_x.safetensors"))
    labels, ids = torch.tensor([1]), torch.randint(0, 20, (1, 15))
    for name in ("rar_x.bin", "rar_x.safetensors"):
        assert main(["import-official", "--rar", str(tmp_path / name), "--out", str(tmp_path / "o")]) == 0
        back = load_generator(tmp_path / "o")
        assert isinstance(back, RAR) and torch.equal(back(labels, ids)[0], m.eval()(labels, ids)[0])
        assert "dim=32" in (tmp_path / "o" / "README.md").read_text()  # the card summarises the RAR section
    capsys.readouterr()
    gpt = tmp_path / "gpt.pt"
    torch.save({"model": {"tok_embeddings.weight": torch.zeros(4, 2), "cls_embedding.embedding_table.weight": torch.zeros(2, 2)}}, gpt)
    for cmd, wants in ((["--gpt", str(tmp_path / "rar_x.bin")], "pass it with --rar"),
                       (["--rar", str(gpt), "--which", "model"], "pass it with --gpt"),
                       (["--gpt", str(gpt), "--rar", str(tmp_path / "rar_x.bin")], "not both")):
        assert main(["import-official", *cmd, "--out", str(tmp_path / "bad")]) == 2
        err = capsys.readouterr().err.strip()
        assert wants in err and len(err.splitlines()) == 1, err
        assert not (tmp_path / "bad").exists() and not list(tmp_path.glob(".bad.*.tmp"))
    with pytest.raises(VFMTokError, match="keys an official RAR does not have"):
        import_rar_state({**sd, "extra.weight": torch.zeros(1)})
    with pytest.raises(VFMTokError, match="looks like a LlamaGen GPT"):
        import_rar_state({"tok_embeddings.weight": torch.zeros(4, 2), "cls_embedding.embedding_table.weight": torch.zeros(2, 2)})
    with pytest.raises(VFMTokError, match="not a square grid"):
        import_rar_state(sd, num_tokens=15)


def test_train_config_picks_architecture_and_rar_recipe():
    import argparse

    from vfmtok.cli.train_generator import add_arguments, resolve_config

    def resolve(*argv):
        p = argparse.ArgumentParser()
        add_arguments(p)
        return resolve_config(p.parse_args(["--out", "x", *argv]))

    cfg = resolve("--arch", "rar", "--steps", "1000")
    assert (cfg.preset, cfg.arch, cfg.rar.dim, cfg.rar.n_layer) == ("RAR-B", "rar", 768, 24)
    assert (cfg.lr, tuple(cfg.betas), cfg.weight_decay, cfg.lr_schedule, cfg.min_lr) == (4e-4, (0.9, 0.96), 0.03, "cosine", 1e-5)
    assert A.effective_warmup(cfg) == 250 and cfg.ema_decay == 0.0 and tuple(cfg.permute_anneal) == (0.5, 0.75)
    assert isinstance(A.build_model(resolve("--preset", "RAR-nano")), RAR)
    mine = resolve("--preset", "RAR-L", "--lr", "1e-3", "--set", "permute_anneal=[0.2,0.4]")
    assert mine.lr == 1e-3 and mine.rar.dim == 1024 and tuple(mine.permute_anneal) == (0.2, 0.4)
    gpt = resolve()
    assert (gpt.preset, gpt.arch, gpt.lr, tuple(gpt.betas)) == ("GPT-B", "gpt", 1e-4, (0.9, 0.95))
    with pytest.raises(VFMTokError, match="permute_anneal"):
        resolve("--arch", "rar", "--set", "permute_anneal=[0.8,0.2]")
    with pytest.raises(VFMTokError, match="extract-codes --topk"):
        resolve("--arch", "rar", "--codes", "c", "--set", "topk_codes=2")
    with pytest.raises(VFMTokError, match="is a RAR preset, not GPT"):
        resolve("--arch", "gpt", "--preset", "RAR-B")


def test_guidance_follows_the_official_rar_rule():
    """Official RAR (1d-tokenizer modeling/rar.py) guides whenever guidance_scale != 0, with the scale ramping from 1
    at step 0: 0.5 is anti-guidance, unlike LlamaGen's GPT, for which any scale <= 1.0 means no guidance."""
    import math

    torch.manual_seed(0)
    m = create_rar("RAR-nano", vocab_size=40, num_tokens=8, token_grid=(2, 4), num_classes=5).eval()
    with torch.no_grad():
        for p in m.parameters():
            if p.dim() == 2:
                p.normal_(0, 0.3)
    labels, n, power = torch.tensor([0, 2, 4]), 8, 2.0

    def official(scale):  # greedy by full passes, the official formula computed by hand
        ids = torch.zeros(3, n, dtype=torch.long)
        for t in range(n):
            logits = m(labels, ids[:, :t])[0][:, -1]
            if scale != 0:
                uncond = m(torch.full_like(labels, m.null_class), ids[:, :t])[0][:, -1]
                s = (scale - 1) * (1 - math.cos((t / n) ** power * math.pi)) / 2 + 1
                logits = uncond + (logits - uncond) * s
            ids[:, t] = logits.argmax(-1)
        return ids

    anti = generate(m, labels, cfg_scale=0.5, cfg_power=power, temperature=0)
    assert torch.equal(anti, official(0.5))
    assert torch.equal(generate(m, labels, cfg_scale=0.0, cfg_power=power, temperature=0), official(0.0))
    assert not torch.equal(anti, official(0.0))  # anti-guidance is not "no guidance"
    assert m.guides(0.5) and not m.guides(0.0)
