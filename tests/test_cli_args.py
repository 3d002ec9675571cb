"""Shared CLI options: one --device default, numbers out of range refused in one line, one config precedence."""

import argparse

import pytest
import torch

from vfmtok.cli import COMMANDS, build_parser, main
from vfmtok.cli import args as A
from vfmtok.utils.device import resolve_device
from vfmtok.utils.errors import VFMTokError


def _subparser(command):
    parser = build_parser(command)
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[command]


def _defaults(command):
    return {a.dest: a.default for a in _subparser(command)._actions}


def test_every_device_option_defaults_to_auto():
    from vfmtok.tokenizer.config import TrainConfig
    from vfmtok.train.generator import GeneratorTrainConfig

    seen = 0
    for command in COMMANDS:
        d = _defaults(command)
        if "device" not in d:
            continue
        seen += 1
        # Trainers leave it None so that a config file's device survives; their configs default to auto.
        assert d["device"] == "auto" or (command.startswith("train-") and d["device"] is None), command
    assert seen >= 9 and TrainConfig().device == "auto" == GeneratorTrainConfig().device


def test_resolve_device():
    assert resolve_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("CPU") == torch.device("cpu") and resolve_device(None).type in ("cpu", "cuda")
    with pytest.raises(VFMTokError, match="unknown device 'tpu'"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(VFMTokError, match="CUDA is not available"):
            resolve_device("cuda:0")


def test_number_types():
    assert A.positive_int("3") == 3 and A.probability("1") == 1.0 and A.decay("0") == 0.0
    for parse, text in [(A.positive_int, "0"), (A.positive_int, "2.5"), (A.positive_float, "0"), (A.positive_float, "nan"),
                        (A.probability, "0"), (A.decay, "1"), (A.non_negative_int, "-1"), (A.positive_float, "inf")]:
        with pytest.raises(argparse.ArgumentTypeError):
            parse(text)


BAD = [
    (["sample", "--batch-size", "0"], "--batch-size"),
    (["sample", "--per-class", "-2"], "--per-class"),
    (["sample", "--top-p", "0"], "--top-p"),
    (["sample", "--temperature", "0"], "--temperature"),
    (["train-tokenizer", "--out", "{tmp}/t", "--steps", "-5"], "--steps"),
    (["train-tokenizer", "--out", "{tmp}/t", "--lr", "-1e-3"], "--lr"),
    (["train-tokenizer", "--out", "{tmp}/t", "--batch-size", "0"], "--batch-size"),
    (["train-tokenizer", "--out", "{tmp}/t", "--set", "train.steps=-5"], "train.steps"),
    (["train-tokenizer", "--out", "{tmp}/t", "--set", "train.lr=0"], "train.lr"),
    (["train-tokenizer", "--out", "{tmp}/t", "--set", "train.batch_size=0"], "train.batch_size"),
    (["train-generator", "--out", "{tmp}/g", "--steps", "0"], "--steps"),
    (["train-generator", "--out", "{tmp}/g", "--lr", "0"], "--lr"),
    (["train-generator", "--out", "{tmp}/g", "--ema-decay", "1"], "--ema-decay"),
    (["extract-codes", "--tokenizer", "x", "--out", "{tmp}/c", "--batch-size", "0"], "--batch-size"),
    (["encode", "--tokenizer", "x", "--out", "{tmp}/e.npz", "--limit", "0"], "--limit"),
    (["eval-tokenizer", "x", "--num-images", "0"], "--num-images"),
    (["eval-generator", "--ref", "x", "--images-per-class", "0"], "--images-per-class"),
    (["probe", "x", "--max-iter", "0"], "--max-iter"),
    (["demo", "--tokenizer-steps", "0", "--out", "{tmp}/d"], "--tokenizer-steps"),
]


@pytest.mark.parametrize("argv,name", BAD, ids=[" ".join(a[:1] + a[-2:]) for a, _ in BAD])
def test_out_of_range_numbers_are_one_line_exit_2(argv, name, tmp_path, capsys):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert name in err and len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert list(tmp_path.iterdir()) == []  # refused before anything was written


def test_generator_config_validation_refuses_negative_steps_from_set():
    from vfmtok.cli.train_generator import add_arguments, resolve_config

    p = argparse.ArgumentParser()
    add_arguments(p)
    facts = lambda c: dict(vocab_size=64, num_tokens=16, token_grid=(4, 4), num_classes=3)  # noqa: E731
    with pytest.raises(VFMTokError, match=r"generator.steps must be > 0, got -5"):
        resolve_config(p.parse_args(["--out", "x", "--preset", "GPT-nano", "--set", "steps=-5"]), facts)
    with pytest.raises(VFMTokError, match=r"generator.lr must be > 0"):
        resolve_config(p.parse_args(["--out", "x", "--preset", "GPT-nano", "--set", "lr=-1e-4"]), facts)


def test_both_trainers_layer_preset_yaml_set_then_flags(tmp_path):
    from vfmtok.tokenizer.config import get_preset
    from vfmtok.cli import train_generator as G
    from vfmtok.cli import train_tokenizer as T

    y = tmp_path / "t.yaml"
    y.write_text("train:\n  steps: 7\n  lr: 2e-3\n  batch_size: 3\n  log_every: 4\n")
    p = argparse.ArgumentParser()
    T.add_arguments(p)
    cfg = T.resolve_config(p.parse_args(["--out", "x", "--preset", "tiny", "--config", str(y), "--set", "train.steps=8",
                                         "--set", "train.batch_size=5", "--set", "train.log_every=6", "--steps", "9"]))
    base = get_preset("tiny").train
    assert (cfg.train.steps, cfg.train.batch_size, cfg.train.log_every, cfg.train.lr) == (9, 5, 6, 2e-3)
    assert cfg.train.warmup_steps == base.warmup_steps and cfg.train.lr != base.lr  # preset below the YAML

    g = tmp_path / "g.yaml"
    g.write_text("preset: GPT-nano\nsteps: 7\nlr: 3e-4\nbatch_size: 3\nlog_every: 4\n")
    p = argparse.ArgumentParser()
    G.add_arguments(p)
    facts = lambda c: dict(vocab_size=64, num_tokens=16, token_grid=(4, 4), num_classes=3)  # noqa: E731
    cfg = G.resolve_config(p.parse_args(["--out", "x", "--config", str(g), "--set", "steps=8", "--set", "batch_size=5",
                                         "--set", "log_every=6", "--steps", "9"]), facts)
    assert (cfg.steps, cfg.batch_size, cfg.log_every, cfg.lr, cfg.preset) == (9, 5, 6, 3e-4, "GPT-nano")
    assert cfg.model.dim == 64 and cfg.warmup_steps == G.GeneratorTrainConfig().warmup_steps
