"""Scale features of the trainers: exact mid-epoch resume of 2-process gloo runs, gradient accumulation, activation
checkpointing."""

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from test_codes import FakeTokenizer, make_image_folder
from vfmtok.data.imagefolder import ImageFolderDataset
from vfmtok.data.prepare import prepare_shards
from vfmtok.generator.gpt import GPT, preset_config
from vfmtok.train.extract import extract_codes
from vfmtok.train.generator import GeneratorTrainConfig, _wrap, generator_step
from vfmtok.train.common import DistInfo
from vfmtok.utils.io import load_train_state

SRC = str(Path(__file__).parents[1] / "src")


def _torchrun(command: str, args: list[str], nproc: int = 2) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": SRC}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--master_addr", "127.0.0.1",
           "--master_port", str(port), "-m", "vfmtok.cli", command, *args]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]


def _interrupted_copy(full: Path, out: Path, at: int) -> Path:
    """A run folder as if the run had been killed right after its step-`at` checkpoint."""
    name = f"step_{at:07d}"
    shutil.copytree(full / "checkpoints" / name, out / "checkpoints" / name)
    (out / "latest.txt").write_text(name + "\n")
    return out


def _assert_same_state(a: Path, b: Path, step: int) -> None:
    sa, sb = (load_train_state(r / "checkpoints" / f"step_{step:07d}" / "train_state.pt") for r in (a, b))
    for part in ("model", "ema"):
        assert sorted(sa[part]) == sorted(sb[part])
        diff = [k for k in sa[part] if not torch.equal(sa[part][k], sb[part][k])]
        assert not diff, f"{part}: {len(diff)} tensors differ, e.g. {diff[0]}"
    assert len(sa["rng"]) == 2 and not torch.equal(sa["rng"][0]["torch"], sa["rng"][1]["torch"])  # per-rank streams


@pytest.fixture(scope="module")
def codes(tmp_path_factory):
    images = make_image_folder(tmp_path_factory.mktemp("imgs"), per_class=4)
    return extract_codes(FakeTokenizer(), ImageFolderDataset(images, 16), tmp_path_factory.mktemp("c") / "codes", batch_size=6)


@pytest.mark.slow
def test_tokenizer_on_shards_resumes_mid_epoch_bit_identical(tmp_path):
    shards = prepare_shards("sample", tmp_path / "shards", shard_size=100)  # 400 train images: 2 ranks x 2 x accum 2 = 50 steps per epoch
    args = ["--preset", "tiny", "--set", "model.encoder_pretrained=false", "--set", "loss.lpips_weight=0",
            "--set", "model.dec_dropout=0.2", "--set", "train.shuffle_buffer=50", "--set", "train.save_every=2",
            "--set", "train.accum_steps=2", "--data", str(shards), "--steps", "4", "--batch-size", "2", "--device", "cpu"]
    _torchrun("train-tokenizer", [*args, "--out", str(tmp_path / "full")])
    resumed = _interrupted_copy(tmp_path / "full", tmp_path / "resumed", 2)
    _torchrun("train-tokenizer", [*args, "--out", str(resumed), "--resume"])
    _assert_same_state(tmp_path / "full", resumed, 4)


@pytest.mark.slow
def test_generator_resumes_mid_epoch_bit_identical(codes, tmp_path):
    # 12 images, 2 ranks x batch 2: 3 steps per epoch, so step 2 is mid-epoch and step 4 in the next one.
    args = ["--codes", str(codes), "--preset", "GPT-nano", "--batch-size", "2", "--steps", "4", "--save-every", "2",
            "--device", "cpu"]
    _torchrun("train-generator", [*args, "--out", str(tmp_path / "full")])
    resumed = _interrupted_copy(tmp_path / "full", tmp_path / "resumed", 2)
    _torchrun("train-generator", [*args, "--out", str(resumed), "--resume"])
    _assert_same_state(tmp_path / "full", resumed, 4)


def _nano(**kw) -> GPT:
    torch.manual_seed(0)
    return GPT(preset_config("GPT-nano", vocab_size=64, num_tokens=16, token_grid=(4, 4), num_classes=3, **kw))


def _batch(n: int):
    g = torch.Generator().manual_seed(1)
    return torch.randint(0, 64, (n, 16), generator=g), torch.randint(0, 3, (n,), generator=g)


def test_accumulation_k_by_b_equals_one_batch_of_kb():
    no_drop = dict(token_dropout=0.0, resid_dropout=0.0, ffn_dropout=0.0, class_dropout_prob=0.0)
    cfg = GeneratorTrainConfig(lr=1e-2, ema_decay=0)
    ids, labels = _batch(12)
    results = []
    for k in (1, 3):
        model = _nano(**no_drop)
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr)
        micro = [(ids[i::k], labels[i::k]) for i in range(k)]
        loss, gnorm, _ = generator_step(model, opt, micro, 0, cfg, torch.device("cpu"))
        results.append((float(loss), float(gnorm), [p.detach().clone() for p in model.parameters()]))
    (l1, g1, p1), (l3, g3, p3) = results
    assert abs(l1 - l3) < 1e-5 and abs(g1 - g3) < 1e-5
    assert max((a - b).abs().max().item() for a, b in zip(p1, p3)) < 1e-6
    assert max((a - b).abs().max().item() for a, b in zip(p1, _nano(**no_drop).parameters())) > 1e-4  # it did step


def test_activation_checkpointing_gives_the_same_gradients():
    ids, labels = _batch(4)
    grads = []
    for ckpt in (False, True):
        model = _wrap(_nano(), GeneratorTrainConfig(grad_checkpoint=ckpt), DistInfo())
        names = [n for n, _ in model.named_parameters()]
        calls = []
        model.blocks[0].feed_forward.w1.register_forward_hook(lambda *a: calls.append(1))
        torch.manual_seed(5)  # dropout is on: the recompute must replay the same masks
        _, loss = model(labels, ids[:, :-1], targets=ids)
        loss.backward()
        assert len(calls) == (2 if ckpt else 1)  # the block really is recomputed in the backward pass
        grads.append((names, [p.grad.clone() for p in model.parameters()]))
    assert grads[0][0] == grads[1][0]  # parameter names (checkpoint keys) unchanged
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(grads[0][1], grads[1][1]))


@pytest.mark.slow
def test_fsdp2_with_accumulation_and_checkpointing_matches_ddp(codes, tmp_path):
    from safetensors.torch import load_file

    args = ["--codes", str(codes), "--preset", "GPT-nano", "--batch-size", "2", "--accum-steps", "2", "--steps", "2",
            "--save-every", "2", "--device", "cpu", "--set", "model.resid_dropout=0", "--set", "model.ffn_dropout=0",
            "--set", "model.token_dropout=0", "--set", "model.class_dropout_prob=0"]
    _torchrun("train-generator", [*args, "--out", str(tmp_path / "ddp")])
    _torchrun("train-generator", [*args, "--out", str(tmp_path / "fsdp"), "--fsdp", "--grad-checkpoint"])
    a, b = (load_file(tmp_path / r / "checkpoints/step_0000002/model.safetensors") for r in ("ddp", "fsdp"))
    assert sorted(a) == sorted(b) and max((a[k] - b[k]).abs().max().item() for k in a) < 1e-5


@pytest.mark.slow
def test_compiled_training_matches_eager_with_the_same_checkpoint_keys(codes, tmp_path):
    """--compile (blocks compiled in place) trains the same weights as eager, saved under the same names."""
    from safetensors.torch import load_file

    from vfmtok.cli import main

    args = ["--codes", str(codes), "--preset", "GPT-nano", "--batch-size", "2", "--steps", "2", "--save-every", "2",
            "--device", "cpu", "--set", "model.resid_dropout=0", "--set", "model.ffn_dropout=0",
            "--set", "model.token_dropout=0", "--set", "model.class_dropout_prob=0"]
    assert main(["train-generator", *args, "--out", str(tmp_path / "eager")]) == 0
    assert main(["train-generator", *args, "--out", str(tmp_path / "compiled"), "--compile"]) == 0
    a, b = (load_file(tmp_path / r / "checkpoints/step_0000002/model.safetensors") for r in ("eager", "compiled"))
    assert sorted(a) == sorted(b) and max((a[k] - b[k]).abs().max().item() for k in a) < 1e-4
    assert "torch.compile" in (tmp_path / "compiled" / "train.log").read_text()


def test_a_process_that_started_a_group_ends_without_finalisation(tmp_path):
    """The teardown abort (a DDP-held gloo group's threads alive through interpreter exit) cannot happen: after
    cleanup the worker ends with os._exit (atexit handlers do not run), a process without a group returns."""
    from vfmtok.train import common as C

    assert C.exit_code(3) == 3  # in-process: no group started here
    code = ("import atexit, torch; from vfmtok.train import common as C\n"
            "info = C.setup_distributed('cpu'); ddp = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(2, 2))\n"
            "atexit.register(lambda: print('finalised'))\n"
            "C.cleanup_distributed(); print('torn down', flush=True); C.exit_code(5); print('not reached')\n")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": SRC, "RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0",
           "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 5 and res.stdout.split() == ["torn", "down"], res.stdout + res.stderr[-2000:]
