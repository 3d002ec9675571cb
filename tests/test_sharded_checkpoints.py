"""FSDP checkpoints through torch.distributed.checkpoint: each rank writes its shard, and a run resumes at another
world size with the same weights, optimiser state and step (2 gloo ranks -> 1 and 1 -> 2)."""

import shutil

import pytest
import torch
from safetensors.torch import load_file

from test_resume_scale import _torchrun, codes  # noqa: F401  (the codes fixture)
from vfmtok.train.sharded import SHARDED_DIR, consolidate_checkpoint, read_full


@pytest.mark.slow
@pytest.mark.parametrize("before,after", [(2, 1), (1, 2)])
def test_fsdp_run_resumes_at_another_world_size(codes, tmp_path, before, after):
    args = ["--codes", str(codes), "--preset", "GPT-nano", "--batch-size", "2", "--save-every", "2", "--device", "cpu",
            "--fsdp", "--ema-decay", "0"]
    _torchrun("train-generator", [*args, "--steps", "2", "--out", str(tmp_path / "a")], before)
    step2 = tmp_path / "a/checkpoints/step_0000002"
    shards = sorted(p.name for p in (step2 / SHARDED_DIR).iterdir())
    assert ".metadata" in shards and len([s for s in shards if s.endswith(".distcp")]) == before  # one file per rank
    assert "model" not in torch.load(step2 / "train_state.pt", weights_only=True)  # nothing gathered on rank 0
    trained = load_file(step2 / "model.safetensors")  # the run's last checkpoint is consolidated for sampling
    assert trained and all(torch.equal(trained[k], v) for k, v in read_full(step2, "model").items())

    # lr 1e-30: the resumed step moves no weight by a float32 ulp (nor does weight decay), only Adam's moments
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    _torchrun("train-generator", [*args, "--steps", "3", "--lr", "1e-30", "--resume", "--out", str(tmp_path / "b")], after)
    step3 = tmp_path / "b/checkpoints/step_0000003"
    resumed = load_file(step3 / "model.safetensors")
    assert sorted(resumed) == sorted(trained) and all(torch.equal(resumed[k], trained[k]) for k in trained)
    opt = read_full(step3, "optimizer")
    steps = {float(v) for k, v in opt.items() if k.endswith(".step")}
    assert steps == {3.0}  # Adam's step counters came back from step 2's shards
    assert len([s for s in (step3 / SHARDED_DIR).iterdir() if s.name.endswith(".distcp")]) == after
    # an intermediate checkpoint has no weights file until it is consolidated
    mid = tmp_path / "mid"
    shutil.copytree(step2, mid)
    (mid / "model.safetensors").unlink()
    consolidate_checkpoint(mid)
    assert all(torch.equal(load_file(mid / "model.safetensors")[k], trained[k]) for k in trained)
