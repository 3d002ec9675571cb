"""Tokenizer training: loss goes down on real images, resume continues, DDP (gloo, 2 processes) runs, CLI errors."""

import json
import os
import socket
import subprocess
import sys

import pytest
import torch

from vfmtok.cli import main as cli_main
from vfmtok.tokenizer.config import get_preset
from vfmtok.train.tokenizer import train_tokenizer
from vfmtok.utils.errors import VFMTokError


def tiny_run(steps, **train):
    cfg = get_preset("tiny")
    cfg.model.encoder_pretrained = False
    cfg.train.steps = steps
    cfg.train.batch_size = 8
    cfg.train.lr = 2e-3
    cfg.train.warmup_steps = 2
    cfg.train.save_every = 1000
    cfg.train.ema_decay = 0.9
    for k, v in train.items():
        setattr(cfg.train, k, v)
    return cfg


def read_metrics(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_training_reduces_loss_on_real_images(tmp_path):
    torch.manual_seed(0)
    run = tmp_path / "run"
    folder = train_tokenizer(tiny_run(60), run)
    m = read_metrics(run)
    first = sum(r["pixel"] for r in m[:3]) / 3
    last = sum(r["pixel"] for r in m[-10:]) / 10
    assert last < 0.85 * first, (first, last)
    assert (folder / "model.safetensors").is_file() and (run / "recon.png").is_file()
    assert (run / "train.log").is_file() and (run / "run_config.json").is_file()
    assert all(0 < r["usage"] <= 1 for r in m)


def test_resume_continues_from_checkpoint(tmp_path):
    run = tmp_path / "run"
    train_tokenizer(tiny_run(4, save_every=2), run)
    with pytest.raises(VFMTokError, match="already holds a run"):
        train_tokenizer(tiny_run(6), run)
    folder = train_tokenizer(tiny_run(6, save_every=2), run, resume=True)
    assert folder.name == "step_0000006"
    steps = [r["step"] for r in read_metrics(run)]
    assert steps == [1, 2, 3, 4, 5, 6]


def test_feature_cache_path_trains(tmp_path):
    run = tmp_path / "run"
    train_tokenizer(tiny_run(3, cache_features=True, cache_views=2), run)
    assert (run / "feature_cache").is_dir() and len(read_metrics(run)) == 3


def free_port() -> int:
    """A TCP port nothing listens on now (the OS picks it), so parallel test runs do not collide."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_gloo_ddp(tmp_path):
    run = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
           "-m", "vfmtok.cli", "train-tokenizer", "--preset", "tiny", "--set", "model.encoder_pretrained=false",
           "--set", "loss.lpips_weight=0", "--steps", "3", "--batch-size", "4", "--out", str(run), "--device", "cpu",
           # the discriminator joins at step 1 and micro-batches skip the all-reduce: DDP with static_graph copes
           "--set", "loss.gan_start=1", "--set", "train.accum_steps=2"]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert (run / "checkpoints" / "step_0000003" / "model.safetensors").is_file()
    m = read_metrics(run)
    assert [x["step"] for x in m] == [1, 2, 3]
    assert "disc" not in m[0] and all("disc" in x and "gen_adv" in x for x in m[1:])


def test_cli_bad_input_is_one_line(tmp_path, capsys):
    rc = cli_main(["train-tokenizer", "--preset", "tiny", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("vfmtok: error: dataset not found") and "\n" not in err
    (tmp_path / "empty" / "cls").mkdir(parents=True)
    rc = cli_main(["train-tokenizer", "--preset", "tiny", "--data", str(tmp_path / "empty"), "--out", str(tmp_path / "r2")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "no images found" in err and "\n" not in err
    rc = cli_main(["train-tokenizer", "--preset", "nope", "--out", str(tmp_path / "r3")])
    assert rc == 2 and "unknown tokenizer preset" in capsys.readouterr().err
    rc = cli_main(["train-tokenizer", "--preset", "tiny", "--set", "model.bogus=1", "--out", str(tmp_path / "r4")])
    assert rc == 2 and "unknown field" in capsys.readouterr().err


@pytest.mark.parametrize("disc", ["patchgan", "vgg_features"])
def test_adversarial_terms_after_gan_start(tmp_path, disc):
    cfg = tiny_run(3)
    cfg.loss.gan_start = 1
    cfg.loss.gan_weight = 0.5
    cfg.loss.disc = disc
    train_tokenizer(cfg, tmp_path / "gan")
    m = read_metrics(tmp_path / "gan")
    assert "disc" not in m[0] and "gen_adv" not in m[0]  # step 0 is before gan_start
    assert all("disc" in r and "gen_adv" in r and r["disc"] > 0 for r in m[1:])
    st = torch.load(tmp_path / "gan" / "checkpoints" / "step_0000003" / "train_state.pt", weights_only=True)
    assert "disc" in st and "disc_optimizer" in st


def test_encode_and_reconstruct_commands(tmp_path, tiny_tokenizer_dir, capsys):
    import numpy as np

    out = tmp_path / "ids.npz"
    assert cli_main(["encode", "--tokenizer", str(tiny_tokenizer_dir), "--data", "sample", "--limit", "5", "--out", str(out)]) == 0
    z = np.load(out)
    assert z["ids"].shape == (5, 16) and z["ids"].dtype == np.int64 and list(z["token_grid"]) == [4, 4]
    png = tmp_path / "rec.png"
    assert cli_main(["reconstruct", "--tokenizer", str(tiny_tokenizer_dir), "--data", "sample", "--limit", "4", "--out", str(png)]) == 0
    assert png.is_file() and "mean PSNR" in capsys.readouterr().out
    from PIL import Image

    Image.new("RGB", (48, 48)).save(tmp_path / "big.png")
    rc = cli_main(["encode", "--tokenizer", str(tiny_tokenizer_dir), str(tmp_path / "big.png"), "--no-resize", "--out", str(tmp_path / "x.npz")])
    assert rc == 2 and "this tokenizer takes 32x32 images" in capsys.readouterr().err
    assert not (tmp_path / "x.npz").exists()


def test_decoder_only_phase_keeps_codes_and_trains_the_decoder(tmp_path):
    from vfmtok.tokenizer.api import VFMTokenizer

    first = train_tokenizer(tiny_run(3), tmp_path / "a")
    # re-seeding every step would rewrite the codebook if it were not switched off for a decoder-only phase
    second = train_tokenizer(tiny_run(3, init_from=str(first), trainable="decoder", reseed_dead_every=1), tmp_path / "b")
    a, b = (VFMTokenizer.from_pretrained(f).model.eval() for f in (first, second))
    sa, sb = a.trainable_state_dict(), b.trainable_state_dict()
    decoder = [k for k in sa if k.split(".")[0] in ("post_quant", "decoder", "pixel_decoder")]
    assert decoder and any(not torch.equal(sa[k], sb[k]) for k in decoder)
    assert all(torch.equal(sa[k], sb[k]) for k in sa if k not in decoder)  # region encoder, pre_quant, codebook
    images = torch.rand(4, 3, a.cfg.image_size, a.cfg.image_size) * 2 - 1
    assert torch.equal(a.encode(images), b.encode(images))
    assert not torch.allclose(a.decode(a.encode(images)), b.decode(b.encode(images)))

    # a GPT trained on the first run's codes accepts the decoder-only phase, not a phase that trained everything
    from types import SimpleNamespace

    from vfmtok.generator.pairing import check_tokenizer

    tok_a, tok_b = VFMTokenizer.from_pretrained(first), VFMTokenizer.from_pretrained(second)
    gpt = SimpleNamespace(config=SimpleNamespace(vocab_size=tok_a.codebook_size, num_tokens=tok_a.num_tokens,
                                                 token_grid=tok_a.token_grid),
                          tokenizer_info={"checkpoint_hash": tok_a.checkpoint_hash})
    check_tokenizer(gpt, tok_b)
    resaved = tok_b.save_pretrained(tmp_path / "resaved")  # the lineage travels with exports
    check_tokenizer(gpt, VFMTokenizer.from_pretrained(resaved))
    # resuming keeps the hash it started from, though the source run has since moved on to a later checkpoint
    train_tokenizer(tiny_run(4), tmp_path / "a", resume=True)
    resumed = train_tokenizer(tiny_run(4, init_from=str(tmp_path / "a"), trainable="decoder"), tmp_path / "b",
                              resume=True)
    assert resumed.name == "step_0000004"
    check_tokenizer(gpt, VFMTokenizer.from_pretrained(resumed))
    everything = train_tokenizer(tiny_run(1, init_from=str(first)), tmp_path / "c")
    with pytest.raises(VFMTokError, match="the GPT was trained on codes of tokenizer"):
        check_tokenizer(gpt, VFMTokenizer.from_pretrained(everything))


def test_init_from_a_different_model_is_a_one_line_error(tmp_path):
    first = train_tokenizer(tiny_run(1), tmp_path / "a")
    cfg = tiny_run(1, init_from=str(first))
    cfg.model.codebook_size *= 2
    with pytest.raises(VFMTokError, match="its model config differs in codebook_size"):
        train_tokenizer(cfg, tmp_path / "b")
    cfg = tiny_run(1, trainable="encoder")
    with pytest.raises(VFMTokError, match="train.trainable must be all or decoder"):
        train_tokenizer(cfg, tmp_path / "c")


def test_init_from_grows_the_decoder_as_the_same_function(tmp_path):
    from vfmtok.tokenizer.api import VFMTokenizer
    from vfmtok.tokenizer.build import build_tokenizer
    from vfmtok.train.tokenizer import init_weights

    first = train_tokenizer(tiny_run(2), tmp_path / "a")
    src = VFMTokenizer.from_pretrained(first).model.eval()
    cfg = tiny_run(1).model
    cfg.dec_depth = src.cfg.dec_depth + 2
    grown = build_tokenizer(cfg).eval()
    _, lineage = init_weights(grown, cfg, str(first))
    assert len(lineage) == 1 and len(grown.decoder.blocks) == len(src.decoder.blocks) + 2
    images = torch.rand(4, 3, cfg.image_size, cfg.image_size) * 2 - 1
    with torch.no_grad():
        ids = src.encode(images)
        assert torch.equal(grown.encode(images), ids)
        # new blocks are identity maps: the pixels equal the source's to float precision
        torch.testing.assert_close(grown.decode(ids), src.decode(ids), rtol=0, atol=1e-6)
    new = grown.decoder.blocks[-1]
    assert torch.count_nonzero(new.attn.proj.weight) == 0 and torch.count_nonzero(new.mlp.w3.weight) == 0
    assert torch.count_nonzero(new.attn.q.weight) > 0  # only the output projections start at zero

    # a decoder-only phase on the grown model keeps the codes and trains the new blocks
    run = tiny_run(2, init_from=str(first), trainable="decoder")
    run.model.dec_depth = cfg.dec_depth
    out = VFMTokenizer.from_pretrained(train_tokenizer(run, tmp_path / "b")).model.eval()
    assert torch.equal(out.encode(images), ids)
    assert torch.count_nonzero(out.decoder.blocks[-1].attn.proj.weight) > 0
    # a shallower decoder is still refused
    run = tiny_run(1, init_from=str(first))
    run.model.dec_depth = 0
    with pytest.raises(VFMTokError, match="differs in dec_depth"):
        train_tokenizer(run, tmp_path / "c")
