"""Issue 34 items 1 and 3: stale temporaries swept, undecodable images refused naming the file, training without a
val/ split, malformed YAML, a lone empty image, and checkpoint tensors of the wrong dtype: one line each, nothing
half-written."""

import io
import os
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from test_bad_input import _expect_refusal
from vfmtok.cli import main
from vfmtok.utils.atomic import is_temporary, sweep_temporaries, temp_name
from vfmtok.utils.errors import VFMTokError
from vfmtok.utils.io import check_state_dict


def refused(argv, capsys, root, *needles):
    """Run argv; assert exit 2, one stderr line holding every needle, no traceback, nothing new under root."""
    return _expect_refusal(argv, root, capsys, *needles)


def png_bytes(size=(8, 8)):
    buf = io.BytesIO()
    Image.new("RGB", size, (200, 10, 10)).save(buf, format="PNG")
    return buf.getvalue()


def bomb_png(width=30000, height=30000):
    """A valid PNG header announcing 900 M pixels (PIL refuses > 2 x 89 M as a decompression bomb)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1-bit greyscale
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")


def truncated_jpeg():
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buf, format="JPEG")
    return buf.getvalue()[:400]


def image_folder(root, bad_name=None, bad_bytes=b"", good=3, splits=("train",)):
    """root/<split>/a/{0..good-1}.png (+ the bad file in class a of the first split)."""
    for split in splits:
        (root / split / "a").mkdir(parents=True, exist_ok=True)
        for i in range(good):
            (root / split / "a" / f"{i}.png").write_bytes(png_bytes())
    if bad_name:
        (root / splits[0] / "a" / bad_name).write_bytes(bad_bytes)
    return root


# --- stale temporaries ----------------------------------------------------------------------------------------------


def test_sweep_removes_only_temporaries_and_follows_no_link(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    stale = [temp_name(run / "run_config.json"), temp_name(run / "shard-000001.tar"),
             run / "checkpoints" / ".step_0000004.tmp", run / "checkpoints" / ".step_0000002.old"]
    for p in stale:
        p.write_text("half")
    folder_tmp = temp_name(run / "checkpoints" / "step_0000006")
    (folder_tmp / "sub").mkdir(parents=True)
    keep = [run / "notes.tmp", run / ".hidden.tmp", run / ".x.ABCDEFGH.tmp", run / "a.txt"]
    for p in keep:
        p.write_text("mine")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / temp_name(elsewhere / "f").name).write_text("not this folder's")
    os.symlink(elsewhere, run / "link")
    removed = sweep_temporaries(run)
    assert sorted(removed) == sorted(stale + [folder_tmp])
    assert all(p.exists() for p in keep) and len(list(elsewhere.iterdir())) == 1
    assert is_temporary(temp_name(run / "x").name) and not is_temporary("x.tmp")


def test_taking_a_run_folder_sweeps_what_killed_writers_left(cli_world, tmp_path, capsys):
    out = tmp_path / "shards"
    out.mkdir()
    stale = [temp_name(out / "shard-000000.tar"), temp_name(out / "index.json")]
    for p in stale:
        p.write_bytes(b"half a shard")
    (out / "mine.txt").write_text("unrelated")
    assert main(["prepare-data", str(cli_world["data"]), "--out", str(out), "--shard-size", "4"]) == 0
    names = sorted(p.name for p in out.iterdir())
    assert not [n for n in names if n.endswith(".tmp")] and "mine.txt" in names and "index.json" in names
    capsys.readouterr()


def test_checkpoint_save_sweeps_its_stale_build_folders(tmp_path):
    from vfmtok.train.common import save_checkpoint

    ck = tmp_path / "run" / "checkpoints"
    ck.mkdir(parents=True)
    (ck / ".step_0000002.tmp").mkdir()  # an older vfmtok's name
    temp_name(ck / "step_0000002").mkdir()
    save_checkpoint(tmp_path / "run", 2, {"w": torch.ones(2)}, {}, "gpt", {"step": 2})
    assert sorted(p.name for p in ck.iterdir()) == ["step_0000002"]


# --- images -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad_name,bad_bytes,needle", [
    ("empty.jpg", b"", "the file is empty"),
    ("bomb.png", bomb_png(), "decompression bomb"),
    ("cut.jpg", truncated_jpeg(), "Truncated"),
    ("junk.png", b"not an image at all", "cannot identify image file"),
])
def test_prepare_data_refuses_undecodable_images(tmp_path, capsys, bad_name, bad_bytes, needle):
    data = image_folder(tmp_path / "data", bad_name, bad_bytes)
    err = refused(["prepare-data", str(data), "--out", str(tmp_path / "out"), "--shard-size", "2"], capsys, tmp_path,
                  bad_name, needle)
    assert "BytesIO" not in err


def test_prepare_data_keeps_an_existing_out_as_it_was(tmp_path, capsys):
    data = image_folder(tmp_path / "data", "junk.png", b"junk")
    out = tmp_path / "out"
    out.mkdir()
    (out / "unrelated.txt").write_text("x")
    refused(["prepare-data", str(data), "--out", str(out), "--shard-size", "2", "--workers", "2"], capsys, tmp_path,
            "junk.png")


@pytest.mark.parametrize("workers", ["0", "1"])
def test_extract_codes_names_the_image_and_leaves_no_codes(cli_world, tmp_path, capsys, workers):
    data = image_folder(tmp_path / "data", "junk.png", b"\x89PNG\r\n\x1a\n garbage", good=5)
    refused(["extract-codes", "--tokenizer", str(cli_world["tokenizer"]), "--data", str(data), "--out",
             str(tmp_path / "codes"), "--device", "cpu", "--batch-size", "2", "--num-workers", workers], capsys,
            tmp_path, str(data / "train" / "a" / "junk.png"))


def test_lone_empty_image_is_named_not_the_batch_size(tmp_path, capsys):
    (tmp_path / "data" / "a").mkdir(parents=True)
    (tmp_path / "data" / "a" / "only.png").write_bytes(b"")
    err = refused(["train-tokenizer", "--preset", "tiny", "--data", str(tmp_path / "data"), "--out",
                   str(tmp_path / "run"), "--device", "cpu"], capsys, tmp_path, "only.png", "empty")
    assert "global batch" not in err


def test_training_needs_no_val_split(tmp_path, capsys):
    data = image_folder(tmp_path / "data", good=4)  # train/ only
    run = tmp_path / "run"
    assert main(["train-tokenizer", "--preset", "tiny", "--data", str(data), "--out", str(run), "--device", "cpu",
                 "--steps", "1", "--batch-size", "2", "--set", "model.encoder_pretrained=false"]) == 0
    err = capsys.readouterr().err
    assert "no usable 'val' split" in err and (run / "recon.png").is_file()


# --- configs ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["train-tokenizer", "train-generator"])
def test_malformed_yaml_is_one_line(tmp_path, capsys, command):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  lr: [1,\n")
    base = [command, "--out", str(tmp_path / "run"), "--device", "cpu"]
    refused([*base, "--config", str(bad)], capsys, tmp_path, "bad.yaml", "not valid YAML", "line")
    refused([*base, "--set", "train.lr=[1,"], capsys, tmp_path, "train.lr=[1,", "not valid YAML")
    bad.write_bytes(b"\xff\xfe\x00binary")
    refused([*base, "--config", str(bad)], capsys, tmp_path, "not a text file")
    refused([*base, "--config", str(tmp_path)], capsys, tmp_path, "not a regular file")


# --- item 3: dtypes ---------------------------------------------------------------------------------------------


def test_check_state_dict_names_tensor_and_dtypes():
    model = {"w": torch.empty(2, 3, device="meta"), "n": torch.empty((), dtype=torch.long, device="meta")}
    check_state_dict(model, {"w": torch.zeros(2, 3, dtype=torch.float16), "n": torch.tensor(3)}, "ck")  # a cast
    check_state_dict(model, {"w": torch.zeros(2, 3, dtype=torch.bfloat16), "n": torch.tensor(3)}, "ck")
    with pytest.raises(VFMTokError, match=r"^ck does not match .*dtype mismatch for w: expected float32, found int8$"):
        check_state_dict(model, {"w": torch.zeros(2, 3, dtype=torch.int8), "n": torch.tensor(3)}, "ck")
    with pytest.raises(VFMTokError, match="dtype mismatch for n: expected int64, found float32"):
        check_state_dict(model, {"w": torch.zeros(2, 3), "n": torch.tensor(3.0)}, "ck")
    with pytest.raises(VFMTokError, match="dtype mismatch for w: expected float32, found bool"):
        check_state_dict(model, {"w": torch.zeros(2, 3, dtype=torch.bool), "n": torch.tensor(3)}, "ck")


def _recast(src, dst, dtype):
    """A copy of checkpoint folder src whose first 2-D float tensor is stored as dtype; returns its name."""
    dst.mkdir()
    for f in src.iterdir():
        if f.is_file() and f.name != "model.safetensors":
            (dst / f.name).write_bytes(f.read_bytes())
    state = load_file(str(src / "model.safetensors"))
    k = next(k for k, v in state.items() if v.dim() == 2 and v.is_floating_point())
    state[k] = state[k].to(dtype)
    save_file(state, str(dst / "model.safetensors"))
    return k


def test_int8_tensor_is_refused_everywhere(cli_world, tmp_path, capsys):
    tok, gpt = tmp_path / "tok", tmp_path / "gpt"
    kt = _recast(cli_world["tokenizer"], tok, torch.int8)
    kg = _recast(cli_world["gpt"] / "checkpoints" / "step_0000002", gpt, torch.int8)
    img = tmp_path / "x.png"
    img.write_bytes(png_bytes((32, 32)))
    needle = "expected float32, found int8"
    for argv in (["reconstruct", "--tokenizer", str(tok), str(img), "--out", str(tmp_path / "r.png")],
                 ["extract-codes", "--tokenizer", str(tok), "--data", str(cli_world["data"]),
                  "--out", str(tmp_path / "codes")]):
        refused([*argv, "--device", "cpu"], capsys, tmp_path, needle, f"dtype mismatch for {kt}")
    for argv in (["sample", "--gpt", str(gpt), "--tokenizer", str(cli_world["tokenizer"]), "--out", str(tmp_path / "s")],
                 ["sample-npz", "--gpt", str(gpt), "--tokenizer", str(cli_world["tokenizer"]), "--num-images", "2",
                  "--out", str(tmp_path / "s.npz")]):
        refused([*argv, "--device", "cpu"], capsys, tmp_path, needle, f"dtype mismatch for {kg}")
    refused(["train-tokenizer", "--preset", "tiny", "--data", str(cli_world["data"]), "--out", str(tmp_path / "run"),
             "--device", "cpu", "--set", f"train.init_from={tok}", "--set", "model.encoder_pretrained=false"],
            capsys, tmp_path, needle)


def test_half_precision_checkpoints_still_load(cli_world, tmp_path):
    from vfmtok.generator.checkpoint import load_generator
    from vfmtok.tokenizer.api import load_tokenizer

    for dtype in (torch.float16, torch.bfloat16):
        name = str(dtype).split(".")[1]
        _recast(cli_world["tokenizer"], tmp_path / f"tok-{name}", dtype)
        _recast(cli_world["gpt"] / "checkpoints" / "step_0000002", tmp_path / f"gpt-{name}", dtype)
        tok = load_tokenizer(tmp_path / f"tok-{name}")
        gpt = load_generator(tmp_path / f"gpt-{name}")
        assert all(p.dtype == torch.float32 for p in gpt.parameters())
        assert all(p.dtype == torch.float32 for p in tok.model.parameters())
