"""Issue 15 item 3: odd images work (converted correctly), broken inputs exit 2 with one line and leave nothing behind."""

import json
import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from vfmtok.cli import main
from vfmtok.data.imagefolder import load_rgb
from helpers import build_tiny_tokenizer


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    return build_tiny_tokenizer(tmp_path_factory.mktemp("tok") / "tok")


def odd_images(folder):
    """One file per odd kind: {name: path}."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)
    files = {}

    def save(name, img, **kw):
        files[name] = folder / name
        img.save(files[name], **kw)

    save("gray.png", Image.fromarray(rgb[..., 0], "L"))
    rgba = np.dstack([rgb, np.where(np.arange(60) < 30, 0, 255).astype(np.uint8)[None].repeat(40, 0)])
    save("rgba.png", Image.fromarray(rgba, "RGBA"))
    save("deep16.png", Image.fromarray(np.full((40, 60), 32896, np.uint16)))  # 32896 / 257 = 128
    save("cmyk.jpg", Image.fromarray(rgb).convert("CMYK"), quality=95)
    save("tiny.png", Image.fromarray(rgb[:10, :10]))
    save("huge.jpg", Image.new("RGB", (6000, 4000), (10, 200, 30)))
    rot = Image.new("RGB", (60, 40), (255, 0, 0))
    rot.paste((0, 0, 255), (0, 0, 30, 40))  # left half blue
    exif = rot.getexif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    save("exif.jpg", rot, exif=exif, quality=95)
    return files


def test_odd_images_are_converted_correctly(tmp_path):
    f = odd_images(tmp_path)
    gray = np.asarray(load_rgb(f["gray.png"]))
    assert gray.shape == (40, 60, 3) and (gray[..., 0] == gray[..., 2]).all()
    rgba = np.asarray(load_rgb(f["rgba.png"]))
    assert (rgba[:, :30] == 255).all()  # transparent half over white, not black
    deep = np.asarray(load_rgb(f["deep16.png"]))
    assert deep.dtype == np.uint8 and (deep == 128).all()  # scaled, not clipped to white
    cmyk = np.asarray(load_rgb(f["cmyk.jpg"])).astype(int)
    ref = np.asarray(Image.open(f["cmyk.jpg"]).convert("RGB")).astype(int)
    assert cmyk.shape == (40, 60, 3) and np.abs(cmyk - ref).max() == 0
    up = np.asarray(load_rgb(f["exif.jpg"])).astype(int)
    assert up.shape == (60, 40, 3)  # rotated upright: now portrait
    assert up[5, 20, 2] > 200 and up[5, 20, 0] < 60 and up[55, 20, 0] > 200  # blue (was left) on top
    assert load_rgb(f["huge.jpg"]).size == (6000, 4000) and load_rgb(f["tiny.png"]).size == (10, 10)


def test_reconstruct_and_encode_take_every_odd_image(tok, tmp_path, capsys):
    files = odd_images(tmp_path / "imgs")
    out = tmp_path / "grid.png"
    assert main(["reconstruct", "--tokenizer", str(tok), *map(str, files.values()), "--out", str(out),
                 "--device", "cpu"]) == 0
    assert Image.open(out).size[1] > 0
    data = tmp_path / "data" / "train"
    (data / "a").mkdir(parents=True)
    for name, p in files.items():
        os.link(p, data / "a" / name)
    os.symlink("loop.jpg", data / "a" / "loop.jpg")  # a link to itself
    os.symlink(data / "b", data / "b")  # a class folder that loops
    assert main(["encode", "--tokenizer", str(tok), "--data", str(data.parent), "--split", "train",
                 "--out", str(tmp_path / "ids.npz"), "--device", "cpu"]) == 0
    with np.load(tmp_path / "ids.npz") as z:
        assert len(z["ids"]) == len(files)  # every odd image, the loops skipped
    capsys.readouterr()


def _expect_refusal(argv, tmp_path, capsys, *needles):
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    rc = main(argv)
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    for n in needles:
        assert n in err, err
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before  # nothing left behind
    return err


def _zip(path, members):
    with zipfile.ZipFile(path, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return path


def _png_bytes():
    import io

    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.parametrize("case", ["empty-zip", "traversal-zip", "only-loops"])
def test_bad_data_is_refused(tok, tmp_path, capsys, case):
    if case == "empty-zip":
        data, needles = _zip(tmp_path / "empty.zip", {}), ("empty.zip", "no class sub-folders")
    elif case == "traversal-zip":
        data = _zip(tmp_path / "evil.zip", {"train/a/ok.png": _png_bytes(), "../x.jpg": _png_bytes()})
        needles = ("evil.zip", "'../x.jpg'", "refusing")
    else:
        data = tmp_path / "loops"
        (data / "a").mkdir(parents=True)
        os.symlink("x.jpg", data / "a" / "x.jpg")
        needles = ("no images found",)
    for cmd in (["encode", "--tokenizer", str(tok), "--out", str(tmp_path / "o.npz")],
                ["extract-codes", "--tokenizer", str(tok), "--out", str(tmp_path / "codes")],
                ["train-tokenizer", "--preset", "tiny", "--out", str(tmp_path / "run")]):
        _expect_refusal([*cmd, "--data", str(data), "--device", "cpu"], tmp_path, capsys, *needles)


def _broken_checkpoint(tok, dst, case):
    dst.mkdir()
    cfg = json.loads((tok / "config.json").read_text())
    state = load_file(str(tok / "model.safetensors"))
    if case == "missing-section":
        cfg["config"].pop("model")
    elif case == "missing-fields":  # the right type, but the architecture fields gone: defaults do not fit
        cfg["config"]["model"] = {"arch": cfg["config"]["model"]["arch"]}
    elif case == "wrong-shapes":
        k = next(k for k, v in state.items() if v.dim() == 2)
        state[k] = state[k][:, :-1].contiguous()
    elif case == "newer-format":
        cfg["format_version"] = 99
        cfg["vfmtok_version"] = "9.0"
    (dst / "config.json").write_text(json.dumps(cfg))
    save_file(state, str(dst / "model.safetensors"))
    return dst


@pytest.mark.parametrize("case,needles", [("missing-section", ("lacks its 'model' section",)),
                                          ("missing-fields", ("does not match this architecture",)),
                                          ("wrong-shapes", ("shape mismatch for",)),
                                          ("newer-format", ("format version 99", "vfmtok 9.0", "upgrade"))])
def test_bad_checkpoint_is_refused(tok, tmp_path, capsys, case, needles):
    bad = _broken_checkpoint(tok, tmp_path / "bad", case)
    img = tmp_path / "x.png"
    Image.new("RGB", (32, 32)).save(img)
    for cmd in (["reconstruct", "--tokenizer", str(bad), str(img), "--out", str(tmp_path / "r.png")],
                ["extract-codes", "--tokenizer", str(bad), "--data", "sample", "--out", str(tmp_path / "codes")],
                ["eval-tokenizer", str(bad), "--out", str(tmp_path / "e.json")]):
        _expect_refusal([*cmd, "--device", "cpu"], tmp_path, capsys, *needles)


def test_newer_gpt_checkpoint_is_refused(tmp_path, capsys):
    gpt = tmp_path / "gpt"
    gpt.mkdir()
    (gpt / "config.json").write_text(json.dumps({"model_type": "gpt", "format_version": 7, "config": {}}))
    save_file({"x": torch.zeros(1)}, str(gpt / "model.safetensors"))
    _expect_refusal(["sample", "--gpt", str(gpt), "--out", str(tmp_path / "s"), "--device", "cpu"], tmp_path, capsys,
                    "format version 7")


def test_real_subprocess_exit_code_and_one_line(tmp_path):
    evil = _zip(tmp_path / "evil.zip", {"train/a/ok.png": _png_bytes(), "../x.jpg": _png_bytes()})
    r = subprocess.run([sys.executable, "-m", "vfmtok.cli", "train-tokenizer", "--preset", "tiny", "--data", str(evil),
                        "--out", str(tmp_path / "run"), "--device", "cpu"], capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}, timeout=300)
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().splitlines() == [r.stderr.strip()] and "refusing" in r.stderr and "Traceback" not in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["evil.zip"]
