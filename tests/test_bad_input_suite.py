"""Issue 34 item 4: a generated bad-input suite. Every command of `vfmtok.cli.COMMANDS`, every path and number option its
parser has (read from the parser, not listed here), crossed with the input classes of that option's kind: each case
must exit 2 with one stderr line naming the problem, no traceback, and leave no file behind (in --out, in the inputs,
in the shared fixtures). Valid odd inputs (tiny images, unicode paths, an --out holding unrelated files) must work
and leave unrelated files untouched. Runs in-process through `vfmtok.cli.main`; docs/robustness.md has the counts.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import shutil
import signal
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from vfmtok.cli import COMMANDS, build_parser, main

# --- what each option is ------------------------------------------------------------------------------------------

# An option's kind from its argparse dest; (command, dest) entries override. Options absent here and not numeric
# (names, choices, hosts, tokens) are not crossed.
KINDS = {"tokenizer": "checkpoint", "gpt": "checkpoint", "checkpoint": "checkpoint", "anchor_tokenizer": "checkpoint",
         "model": "bundle", "data": "dataset", "src": "dataset", "ref": "dataset", "codes": "codes",
         "samples": "npz", "config": "yaml", "overrides": "set", "images": "image", "folder": "checkpoint",
         "out": "out", "save_samples": "out", "save_ref_stats": "out", "dest": "out"}
KIND_OVERRIDES = {("import-official", "tokenizer"): "pt", ("import-official", "gpt"): "pt",
                  ("import-official", "rar"): "pt", ("import-official", "dinov2"): "pt",
                  ("eval-generator", "gpt"): "checkpoint", ("sample", "gpt"): "checkpoint"}
# Options whose value the command never opens as given (a Hub id is looked up, --data 'sample' is a name).
SKIP = {("push-to-hub", "repo_id"), ("serve", "host"), ("push-to-hub", "token")}

# A valid invocation of each command on the shared fixtures, the crossed option replacing its own value;
# `cheap` ones are also run as they are (they must succeed) and get a full-disk case.
BASES = {
    "prepare-data": (lambda w, o: [str(w["data"]), "--out", str(o), "--shard-size", "4"], True),
    "train-tokenizer": (lambda w, o: ["--preset", "tiny", "--data", str(w["data"]), "--out", str(o), "--steps", "1",
                                      "--batch-size", "2", "--set", "model.encoder_pretrained=false"], True),
    "encode": (lambda w, o: ["--tokenizer", str(w["tokenizer"]), str(w["image"]), "--out", str(o / "ids.npz")], True),
    "reconstruct": (lambda w, o: ["--tokenizer", str(w["tokenizer"]), str(w["image"]), "--out", str(o / "r.png")], True),
    "extract-codes": (lambda w, o: ["--tokenizer", str(w["tokenizer"]), "--data", str(w["data"]), "--out", str(o),
                                    "--batch-size", "4"], True),
    "train-generator": (lambda w, o: ["--codes", str(w["codes"]), "--preset", "GPT-nano", "--steps", "1",
                                      "--batch-size", "4", "--out", str(o)], True),
    "sample": (lambda w, o: ["--gpt", str(w["gpt"]), "--tokenizer", str(w["tokenizer"]), "--per-class", "1",
                             "--out", str(o)], True),
    "sample-npz": (lambda w, o: ["--gpt", str(w["gpt"]), "--tokenizer", str(w["tokenizer"]), "--num-images", "2",
                                 "--batch-size", "2", "--out", str(o / "s.npz")], True),
    "export": (lambda w, o: ["--gpt", str(w["gpt"]), "--tokenizer", str(w["tokenizer"]), "--out", str(o / "m")], True),
    "eval-tokenizer": (lambda w, o: [str(w["tokenizer"]), "--data", str(w["data"]), "--split", "val", "--no-lpips",
                                     "--num-images", "4", "--out", str(o / "e.json")], False),
    "eval-generator": (lambda w, o: ["--samples", str(w["npz"]), "--ref", str(w["data"]), "--ref-split", "val",
                                     "--out", str(o / "e.json")], False),
    "probe": (lambda w, o: [str(w["tokenizer"]), "--data", str(w["data"]), "--out", str(o / "p.json")], False),
    "import-official": (lambda w, o: ["--gpt", str(w["pt"]), "--n-head", "2", "--num-tokens", "16",
                                      "--out", str(o / "imp")], False),
    "push-to-hub": (lambda w, o: [str(w["tokenizer"]), "someone/model"], False),
    "class-consistency": (lambda w, o: ["--samples", str(w["npz"]), "--data", str(w["data"]), "--train-per-class",
                                        "2", "--val-per-class", "2", "--out", str(o / "c.json")], False),
    "demo": (lambda w, o: ["--out", str(o), "--quick"], False),
    "figures": (lambda w, o: ["--model", str(w["bundle"]), "--data", str(w["data"]), "--out", str(o)], False),
    "serve": (lambda w, o: ["--model", str(w["bundle"]), "--port", "0"], False),
    "fetch-weights": (lambda w, o: ["--dest", str(o)], False),
}
# Options that only count in another mode of the command: crossed on that mode's valid invocation instead.
ALT_BASES = {
    ("train-generator", "tokenizer"): lambda w, o: ["--data", str(w["data"]), "--tokenizer", str(w["tokenizer"]),
                                                    "--preset", "GPT-nano", "--steps", "1", "--batch-size", "4",
                                                    "--out", str(o)],
    ("train-generator", "data"): lambda w, o: ["--data", str(w["data"]), "--tokenizer", str(w["tokenizer"]),
                                               "--preset", "GPT-nano", "--steps", "1", "--batch-size", "4",
                                               "--out", str(o)],
    ("encode", "data"): lambda w, o: ["--tokenizer", str(w["tokenizer"]), "--data", str(w["data"]),
                                      "--out", str(o / "ids.npz")],
    ("reconstruct", "data"): lambda w, o: ["--tokenizer", str(w["tokenizer"]), "--data", str(w["data"]),
                                           "--out", str(o / "r.png")],
    ("eval-generator", "gpt"): lambda w, o: ["--gpt", str(w["gpt"]), "--tokenizer", str(w["tokenizer"]), "--ref",
                                             str(w["data"]), "--ref-split", "val", "--out", str(o / "e.json")],
    ("class-consistency", "gpt"): lambda w, o: ["--gpt", str(w["gpt"]), "--tokenizer", str(w["tokenizer"]), "--data",
                                                str(w["data"]), "--out", str(o / "c.json")],
    ("import-official", "tokenizer"): lambda w, o: ["--tokenizer", str(w["pt_tok"]), "--dinov2", str(w["pt_dino"]),
                                                    "--out", str(o / "imp")],
}
for _cmd in ("eval-generator", "class-consistency"):
    ALT_BASES[(_cmd, "tokenizer")] = ALT_BASES[(_cmd, "gpt")]
ALT_BASES[("class-consistency", "cfg_scale")] = ALT_BASES[("class-consistency", "gpt")]
ALT_BASES[("import-official", "dinov2")] = ALT_BASES[("import-official", "tokenizer")]
NO_DEVICE = {"prepare-data", "export", "import-official", "push-to-hub", "figures", "fetch-weights"}

# Input classes per kind: name -> key of the `bad` fixture (a path) or a literal value.
CLASSES = {
    "checkpoint": ["missing", "empty_dir", "text_file", "empty_file", "dev_null", "fifo", "ck_truncated", "ck_int8",
                   "ck_shape", "ck_bad_json", "ck_wrong_type"],
    "bundle": ["missing", "empty_dir", "text_file", "dev_null", "fifo", "bundle_no_generator"],
    "dataset": ["missing", "empty_dir", "text_file", "empty_file", "dev_null", "fifo", "zip_truncated",
                "data_empty_image", "data_junk_image", "data_unrelated"],
    "codes": ["missing", "empty_dir", "text_file", "dev_null", "fifo", "codes_bad_json", "codes_truncated",
              "codes_wrong_format"],
    "npz": ["missing", "empty_file", "text_file", "dev_null", "fifo", "npz_truncated", "npz_float", "npz_shape"],
    "yaml": ["missing", "empty_dir", "dev_null", "fifo", "yaml_malformed", "yaml_binary", "yaml_list", "yaml_unknown"],
    "set": ["=set_malformed", "=set_no_equals", "=set_unknown"],
    "image": ["missing", "empty_file", "text_file", "dev_null", "fifo", "image_truncated", "empty_dir"],
    "pt": ["missing", "empty_file", "text_file", "dev_null", "fifo", "pt_truncated", "pt_pickle"],
    "out": ["out_under_file", "out_in_dev_null", "out_in_proc", "out_is_fifo", "dev_null"],
}
SET_VALUES = {"set_malformed": "train.lr=[1,", "set_no_equals": "train.lr", "set_unknown": "train.no_such_field=1"}


def bad_numbers(action: argparse.Action) -> list[str]:
    """Values outside what the option's type accepts, read from the type itself ('int >= 1', 'float > 0 and <= 1')."""
    name = getattr(action.type, "__name__", "")
    words = name.split()
    values = ["abc"]
    if words and words[0] == "float" or action.type is float:
        values.append("nan")
    for op, bound in zip(words[1::3], words[2::3]):
        b = float(bound)
        step = 1 if words[0] == "int" else 0.5
        v = {">=": b - step, ">": b, "<=": b + step, "<": b}[op]
        values.append(str(int(v)) if words[0] == "int" else str(v))
    if action.type is int:
        values.append("-1")  # a plain int: the command itself must refuse a negative count
    return values


# Plain-int options where -1 is meaningful (documented as such in their help) rather than out of range.
NEGATIVE_OK = {("sample-npz", "cfg_interval"), ("sample-npz", "seed"), ("class-consistency", "seed"),
               ("figures", "seed")}


@dataclass(frozen=True)
class Case:
    command: str
    dest: str
    flag: str | None  # None: positional
    cls: str  # fixture key, "=name" for literal values, or "num:VALUE"

    @property
    def id(self) -> str:
        return f"{self.command}:{self.flag or self.dest}:{self.cls.lstrip('=')}"


def _actions(command: str) -> list[argparse.Action]:
    parser = build_parser(command)
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[command]
    return [a for a in sub._actions if not isinstance(a, argparse._HelpAction)]


def generate_cases() -> list[Case]:
    """Every command x its path / number options x the input classes of their kind."""
    cases = []
    for command in COMMANDS:
        for a in _actions(command):
            if (command, a.dest) in SKIP or a.dest == "threads" and command != "fetch-weights":
                continue
            flag = a.option_strings[0] if a.option_strings else None
            kind = KIND_OVERRIDES.get((command, a.dest), KINDS.get(a.dest))
            if kind is not None:
                cases += [Case(command, a.dest, flag, c) for c in CLASSES[kind]]
                if kind == "out" and BASES[command][1]:
                    cases.append(Case(command, a.dest, flag, "out_full"))
            elif a.type is not None and a.choices is None and a.nargs in (None, "+"):
                cases += [Case(command, a.dest, flag, f"num:{v}") for v in bad_numbers(a)
                          if not (v == "-1" and (command, a.dest) in NEGATIVE_OK)]
    return cases


CASES = generate_cases()


# --- fixtures -------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def world(cli_world, tmp_path_factory):
    """The shared inputs plus an image, an .npz of samples, an exported bundle and an official-format GPT .pt."""
    root = tmp_path_factory.mktemp("suite_world")
    w = dict(cli_world)
    w["image"] = root / "img.png"
    Image.fromarray(np.full((32, 32, 3), 90, np.uint8)).save(w["image"])
    w["npz"] = root / "samples.npz"
    np.savez(w["npz"], arr_0=np.zeros((4, 32, 32, 3), np.uint8), labels=np.array([0, 0, 1, 1]))
    assert main(["export", "--gpt", str(w["gpt"]), "--tokenizer", str(w["tokenizer"]), "--out", str(root / "bundle")]) == 0
    w["bundle"] = root / "bundle"
    from test_official_import import facebook_dinov2, llamagen_state, official_tokenizer_state

    w["pt"], w["pt_tok"], w["pt_dino"] = root / "c2i.pt", root / "vq.pt", root / "dinov2.pth"
    torch.save(llamagen_state(), w["pt"])
    state = official_tokenizer_state()
    torch.save({"model": state, "ema": state, "args": argparse.Namespace(image_size=64, vq_model="VQ-16",
                                                                         codebook_size=64)}, w["pt_tok"])
    torch.save(facebook_dinov2(), w["pt_dino"])
    return w


@pytest.fixture(scope="module")
def bad(world, tmp_path_factory):
    """One path (or value) per input class."""
    r = tmp_path_factory.mktemp("bad")
    b = {"missing": r / "no-such-thing", "empty_dir": r / "empty_dir", "text_file": r / "notes.txt",
         "empty_file": r / "empty.png", "dev_null": Path(os.devnull), "fifo": r / "fifo"}
    b["empty_dir"].mkdir()
    b["text_file"].write_text("hello\n")
    b["empty_file"].write_bytes(b"")
    os.mkfifo(b["fifo"])

    def ck_copy(name, src=world["tokenizer"]):
        dst = r / name
        shutil.copytree(src, dst)
        return dst
    b["ck_truncated"] = ck_copy("ck_truncated")
    blob = (b["ck_truncated"] / "model.safetensors").read_bytes()
    (b["ck_truncated"] / "model.safetensors").write_bytes(blob[: len(blob) // 2])
    for name, change in (("ck_int8", lambda v: v.to(torch.int8)), ("ck_shape", lambda v: v[:, :-1].contiguous())):
        b[name] = ck_copy(name)
        state = load_file(str(b[name] / "model.safetensors"))
        k = next(k for k, v in state.items() if v.dim() == 2 and v.is_floating_point())
        state[k] = change(state[k])
        save_file(state, str(b[name] / "model.safetensors"))
    b["ck_bad_json"] = ck_copy("ck_bad_json")
    (b["ck_bad_json"] / "config.json").write_text('{"model_type": ')
    b["ck_wrong_type"] = ck_copy("ck_wrong_type")
    cfg = json.loads((b["ck_wrong_type"] / "config.json").read_text())
    (b["ck_wrong_type"] / "config.json").write_text(json.dumps({**cfg, "model_type": "something-else"}))
    b["bundle_no_generator"] = ck_copy("bundle_no_generator", world["bundle"])
    shutil.rmtree(b["bundle_no_generator"] / "generator")
    b["zip_truncated"] = r / "data.zip"
    shutil.make_archive(str(r / "data"), "zip", world["data"])
    b["zip_truncated"].write_bytes(b["zip_truncated"].read_bytes()[:300])
    for name, payload in (("data_empty_image", b""), ("data_junk_image", b"\x89PNG\r\n\x1a\n junk")):
        b[name] = ck_copy(name, world["data"])
        for split in ("train", "val"):
            (b[name] / split / "red" / "0.png").write_bytes(payload)
    b["data_unrelated"] = r / "unrelated"
    (b["data_unrelated"] / "docs").mkdir(parents=True)
    (b["data_unrelated"] / "docs" / "a.txt").write_text("x")
    for name in ("codes_bad_json", "codes_truncated", "codes_wrong_format"):
        b[name] = ck_copy(name, world["codes"])
    (b["codes_bad_json"] / "index.json").write_text("{")
    npy = sorted(b["codes_truncated"].glob("codes_*.npy"))[0]
    npy.write_bytes(npy.read_bytes()[:100])
    idx = json.loads((b["codes_wrong_format"] / "index.json").read_text())
    (b["codes_wrong_format"] / "index.json").write_text(json.dumps({**idx, "format": "other"}))
    b["npz_truncated"] = r / "trunc.npz"
    b["npz_truncated"].write_bytes(world["npz"].read_bytes()[:200])
    b["npz_float"] = r / "float.npz"
    np.savez(b["npz_float"], arr_0=np.zeros((4, 32, 32, 3), np.float32), labels=np.array([0, 0, 1, 1]))
    b["npz_shape"] = r / "shape.npz"
    np.savez(b["npz_shape"], arr_0=np.zeros((4, 32, 32), np.uint8), labels=np.array([0, 0, 1, 1]))
    b["yaml_malformed"] = r / "bad.yaml"
    b["yaml_malformed"].write_text("train:\n  lr: [1,\n")
    b["yaml_binary"] = r / "binary.yaml"
    b["yaml_binary"].write_bytes(b"\xff\xfe\x00\x01")
    b["yaml_list"] = r / "list.yaml"
    b["yaml_list"].write_text("- 1\n- 2\n")
    b["yaml_unknown"] = r / "unknown.yaml"
    b["yaml_unknown"].write_text("no_such_section:\n  x: 1\n")
    b["image_truncated"] = r / "cut.png"
    b["image_truncated"].write_bytes(world["image"].read_bytes()[:60])
    b["pt_truncated"] = r / "cut.pt"
    b["pt_truncated"].write_bytes(world["pt"].read_bytes()[:100])
    b["pt_pickle"] = r / "pickle.pt"

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))
    torch.save({"model": Evil()}, b["pt_pickle"])
    b["out_under_file"] = b["text_file"] / "out"
    b["out_in_dev_null"] = Path(os.devnull) / "out"
    b["out_in_proc"] = Path("/proc/vfmtok-suite/out")
    b["out_is_fifo"] = b["fifo"]
    return b


def _listing(*roots: Path) -> dict[str, tuple]:
    files = {}
    for root in roots:
        for p in root.rglob("*"):
            st = p.lstat()
            files[str(p)] = (st.st_size, st.st_mtime_ns) if p.is_file() and not p.is_symlink() else None
    return files


class _Hang(Exception):
    pass


def _alarm(signum, frame):
    raise _Hang("the command did not finish within 60 s (blocked on a FIFO or device, or serving?)")


def build_argv(case: Case, w: dict, b: dict, out: Path) -> tuple[list[str], str]:
    """(the command's valid argv with the crossed option set to the case's bad value, that value)."""
    base = ALT_BASES.get((case.command, case.dest), BASES[case.command][0])
    argv = [case.command, *base(w, out)]
    if case.cls.startswith("num:"):
        value = case.cls[4:]
    elif case.cls.startswith("="):
        value = SET_VALUES[case.cls[1:]]
    elif case.cls == "out_full":
        value = str(out / "full")
    else:
        value = str(b[case.cls])
    if case.flag is None:  # positional: replace the base's first positional value (or add it)
        if case.dest == "images":
            argv = [a for a in argv if a != str(w["image"])]
        pos = [i for i, a in enumerate(argv[1:], 1) if not a.startswith("-") and not argv[i - 1].startswith("-")]
        if pos and case.dest != "images":
            argv[pos[0]] = value
        else:
            argv.insert(1, value)
    else:
        if case.flag in argv:
            i = argv.index(case.flag)
            argv[i + 1] = value
        else:
            argv += [case.flag, value]
    if case.command not in NO_DEVICE and "--device" not in argv:
        argv += ["--device", "cpu"]
    return argv, value


def _names_the_problem(case: Case, value: str, err: str) -> bool:
    if case.cls.startswith("num:"):
        return case.flag in err or case.cls[4:] in err
    candidates = [case.flag or case.dest, Path(value).name, value]
    if case.cls.startswith("="):
        candidates.append(SET_VALUES[case.cls[1:]].split("=")[0])
    if case.cls == "out_full":
        candidates.append("no space left")
    if case.cls.startswith("data_"):
        candidates.append("0.png")
    if case.cls.startswith("codes_"):
        candidates.append(case.cls)
    return any(c and c in err for c in candidates)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_one_line(case, world, bad, tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    argv, value = build_argv(case, world, bad, out)
    if case.cls == "out_full":
        import vfmtok.utils.atomic as atomic

        def full(p):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        monkeypatch.setattr(atomic, "_fsync_tree", full)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    watched = [tmp_path, Path(world["data"]).parent, next(iter(bad.values())).parent, Path(world["image"]).parent]
    before = _listing(*watched)
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(60)
    try:
        rc = main(argv)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    err = capsys.readouterr().err.strip()
    lines = [ln for ln in err.splitlines() if not ln.startswith("vfmtok: note:")]
    assert rc == 2, f"exit {rc} for {argv}: {err}"
    assert len(lines) == 1 and "Traceback" not in err, err
    assert _names_the_problem(case, value, lines[0]), f"{lines[0]!r} does not name {case.id}"
    assert _listing(*watched) == before, "files were left behind or changed"


# --- valid odd inputs -----------------------------------------------------------------------------------------------


def test_every_command_has_cases():
    assert {c.command for c in CASES} == set(COMMANDS)


@pytest.mark.parametrize("command", [c for c, (_, cheap) in BASES.items() if cheap])
def test_valid_runs_leave_unrelated_files_alone(command, world, tmp_path, capsys):
    """Each cheap base invocation succeeds with --out a folder already holding unrelated files (untouched), through a
    unicode path."""
    out = tmp_path / "ünïcødé 出力"
    (out / "keep").mkdir(parents=True)
    (out / "notes.txt").write_text("mine")
    (out / "keep" / ".hidden.tmp").write_text("mine too")
    before = _listing(out)
    argv = [command, *BASES[command][0](world, out)]
    argv += [] if command in NO_DEVICE else ["--device", "cpu"]
    assert main(argv) == 0, capsys.readouterr().err
    after = _listing(out)
    assert {k: v for k, v in after.items() if k in before} == before
    assert not [k for k in after if Path(k).name.endswith(".tmp") and k not in before]
    capsys.readouterr()


def test_tiny_and_unicode_images_encode(world, tmp_path, capsys):
    folder = tmp_path / "images ünï 图"
    folder.mkdir()
    Image.fromarray(np.full((1, 1, 3), 7, np.uint8)).save(folder / "1x1 pixel.png")
    Image.fromarray(np.full((3, 200, 3), 7, np.uint8)).save(folder / "wide-ß.png")
    out = tmp_path / "ids ü.npz"
    assert main(["encode", "--tokenizer", str(world["tokenizer"]), *map(str, sorted(folder.iterdir())),
                 "--out", str(out), "--device", "cpu"]) == 0
    with np.load(out) as z:
        assert z["ids"].shape[0] == 2
    capsys.readouterr()
