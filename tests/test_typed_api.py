"""Issue 36: every capability is a typed function with a dataclass config, called here without any argparse object;
the CLI's defaults are the dataclasses' defaults."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from vfmtok.generator.checkpoint import load_generator
from vfmtok.generator.sampling import SamplingConfig, sample_images, sample_to_folder
from vfmtok.tokenizer.api import load_tokenizer
from vfmtok.utils.errors import VFMTokError


@pytest.fixture(scope="module")
def pair(tiny_pair):
    return load_generator(tiny_pair / "gpt"), load_tokenizer(tiny_pair / "tok")


def test_sample_images_is_deterministic_per_config_and_fills_the_models_recommendation(pair):
    gpt, tok = pair
    labels = torch.tensor([0, 1, 2, 1])
    a = sample_images(gpt, tok, labels, SamplingConfig(seed=3, batch_size=2))
    assert a.shape == (4, tok.image_size, tok.image_size, 3) and a.dtype == np.uint8
    assert np.array_equal(a, sample_images(gpt, tok, labels, SamplingConfig(seed=3, batch_size=2)))
    assert not np.array_equal(a, sample_images(gpt, tok, labels, SamplingConfig(seed=4, batch_size=2)))
    gpt.sampling = {"top_k": 1}  # greedy recommendation: every seed gives the same images
    try:
        filled = SamplingConfig(seed=5).for_model(gpt)
        assert (filled.temperature, filled.top_k, filled.top_p) == (1.0, 1, 1.0)
        assert SamplingConfig(top_k=7).for_model(gpt).top_k == 7  # a given value wins over the recommendation
        g1 = sample_images(gpt, tok, labels, SamplingConfig(seed=1))
        assert np.array_equal(g1, sample_images(gpt, tok, labels, SamplingConfig(seed=2)))
    finally:
        gpt.sampling = {}


def test_sample_to_folder_writes_what_the_cli_writes(tiny_pair, tmp_path):
    paths = sample_to_folder(tmp_path / "s", tiny_pair / "gpt", classes=["golf ball", 2], per_class=2,
                             config=SamplingConfig(cfg_scale=1.5, seed=1), device="cpu")
    info = json.loads(paths["info"].read_text())
    assert paths["num_images"] == 4 and info["labels"] == [1, 1, 2, 2] and info["cfg_scale"] == 1.5
    with np.load(paths["npz"]) as z:
        assert z["arr_0"].shape[0] == 4 and z["labels"].tolist() == [1, 1, 2, 2]


def test_eval_generator_and_class_consistency_take_configs(tiny_pair, tmp_path, monkeypatch):
    from vfmtok.eval import inception as I
    from vfmtok.eval.class_consistency import ClassConsistencyConfig, evaluate_class_consistency
    from vfmtok.eval.commands import eval_generator
    from vfmtok.eval.config import GeneratorEvalConfig
    from vfmtok.eval.imagesets import open_image_set

    monkeypatch.setenv("VFMTOK_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(I, "find_full_weights", lambda: None)
    I._build.cache_clear()
    images = open_image_set("sample", 32, split="val")
    real = np.stack([images.read(i) for i in range(4)])
    np.savez(tmp_path / "real.npz", arr_0=real, labels=np.asarray(images.labels[:4]))
    config = GeneratorEvalConfig(samples=tmp_path / "real.npz", ref=str(tmp_path / "real.npz"), second_encoder="none",
                                 device="cpu", out=tmp_path / "g.json")
    result = eval_generator(config)
    record = result.record
    assert result.files[0] == tmp_path / "g.json" and result.table.startswith("| cfg | images | gFID")
    assert record["metrics"]["runs"][0]["gFID"] < 1e-6 and record["arguments"]["command"] == "eval-generator"
    assert config.device == "cpu" and json.loads((tmp_path / "g.json").read_text())["seed"] == 0
    cc = evaluate_class_consistency(ClassConsistencyConfig(
        samples=tmp_path / "real.npz", data="sample", encoder_weights="random", input_size=32, train_per_class=2,
        val_per_class=1, device="cpu"))
    assert cc.files is None and f"{cc.record['metrics']['class_consistency']:.1%}" in cc.table
    assert cc.record["metrics"]["num_samples"] == 4 and 0.0 <= cc.record["metrics"]["class_consistency"] <= 1.0
    I._build.cache_clear()


def test_sample_npz_single_process(tiny_pair, tmp_path):
    from vfmtok.official.sample_npz import NpzSamplingConfig, sample_npz

    config = NpzSamplingConfig(gpt=tiny_pair / "gpt", out=tmp_path / "s.npz", num_images=5, protocol="vfmtok",
                               labels="random", sampling=SamplingConfig(seed=2, batch_size=2), device="cpu")
    record = sample_npz(config)
    with np.load(tmp_path / "s.npz") as z:
        assert z["arr_0"].shape[0] == 5 and len(z["labels"]) == 5
    assert record["arguments"]["seed"] == 2 and record["arguments"]["batch_size"] == 2
    assert not list(tmp_path.glob("s.npz.part*"))  # rank parts merged and removed


def test_trainer_configs_resolve_without_a_namespace(tmp_path):
    from vfmtok.train.generator import resolve_config as generator_config
    from vfmtok.train.tokenizer import resolve_config as tokenizer_config

    t = tokenizer_config("tiny", ["train.steps=8"], flags={"train.lr": 2e-3, "train.batch_size": None})
    assert (t.train.steps, t.train.lr) == (8, 2e-3)
    facts = lambda c: dict(vocab_size=64, num_tokens=16, token_grid=(4, 4), num_classes=3)  # noqa: E731
    g = generator_config({"preset": "GPT-nano", "steps": 9}, ["lr=3e-4"], data_facts=facts)
    assert (g.preset, g.steps, g.lr, g.model.vocab_size) == ("GPT-nano", 9, 3e-4, 64)


@pytest.mark.parametrize("command, config_path, required", [
    ("eval-tokenizer", "vfmtok.eval.config:TokenizerEvalConfig", ["tok"]),
    ("eval-generator", "vfmtok.eval.config:GeneratorEvalConfig", ["--ref", "r"]),
    ("sample", "vfmtok.generator.sampling:SamplingConfig", []),
    ("class-consistency", "vfmtok.eval.class_consistency:ClassConsistencyConfig", []),
    ("probe", "vfmtok.eval.probe:ProbeConfig", ["tok"]),
    ("encode", "vfmtok.encode:EncodeConfig", ["--tokenizer", "t", "--out", "o"]),
    ("extract-codes", "vfmtok.train.extract:ExtractConfig", ["--tokenizer", "t", "--out", "o"]),
    ("figures", "vfmtok.figures:FiguresConfig", []),
    ("import-official", "vfmtok.official.command:ImportConfig", ["--out", "o"]),
])
def test_cli_defaults_are_the_dataclass_defaults(command, config_path, required):
    import importlib

    from vfmtok.cli import build_parser

    module, name = config_path.split(":")
    cls = getattr(importlib.import_module(module), name)
    args = vars(build_parser(command).parse_args([command, *required]))
    shared = [f for f in dataclasses.fields(cls) if f.name in args and f.name not in ("ref", "tokenizer")
              and (f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING)]
    assert len(shared) >= 5  # the options and the config really overlap
    for f in shared:
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        assert args[f.name] == default, f.name


def test_import_official_returns_its_facts_and_writes_a_loadable_folder(tmp_path):
    from test_official_import import G_DIM, llamagen_state

    from vfmtok.generator.gpt import GPT
    from vfmtok.official.command import ImportConfig, import_official

    torch.save(llamagen_state(), tmp_path / "gpt.pt")  # a bare state dict, as FSDP's consolidated.pth
    facts = import_official(ImportConfig(out=tmp_path / "g", gpt=tmp_path / "gpt.pt", n_head=2, num_tokens=16))
    gpt = GPT.from_pretrained(tmp_path / "g")
    assert set(facts) == {"gpt"} and facts["gpt"]["params"] == sum(p.numel() for p in gpt.parameters())
    assert gpt.config.num_tokens == 16 and gpt.config.dim == G_DIM
    with pytest.raises(VFMTokError, match="not both"):
        import_official(ImportConfig(out=tmp_path / "x", gpt=tmp_path / "gpt.pt", rar=tmp_path / "gpt.pt"))
    assert not (tmp_path / "x").exists()


def test_write_figures_returns_the_pictures_it_wrote(tiny_pair, tmp_path):
    from PIL import Image

    from vfmtok.export import export_pair
    from vfmtok.figures import FiguresConfig, write_figures

    model = export_pair(tiny_pair / "gpt", tmp_path / "m")
    written = write_figures(FiguresConfig(model=model, data="sample", per_class=2, out=tmp_path / "f"))
    assert [p.name for p in written] == ["reconstructions.png", "samples.png", "anchor_regions.png"]
    assert Image.open(written[1]).size == (120 + (2 * 34 + 2) * 2, 3 * (34 + 2) * 2)  # 3 classes x 2 samples, x2


def test_evaluate_probe_returns_record_and_table_without_printing(tiny_tokenizer_dir, capsys):
    from vfmtok.eval.probe import ProbeConfig, evaluate_probe

    r = evaluate_probe(ProbeConfig(tokenizer=tiny_tokenizer_dir, data="sample", num_images=6, max_iter=5,
                                   device="cpu"))
    m = r.record["metrics"]["tokens_mean"]
    assert r.record["data"]["num_train"] == 6 and r.record["data"]["num_val"] == 6 and 0.0 <= m["top1_val"] <= 1.0
    assert f"{m['top1_val']:.1%}" in r.table and r.record["arguments"]["max_iter"] == 5
    assert capsys.readouterr().out == ""  # the caller prints


def test_encode_and_reconstruct_images(tiny_tokenizer_dir, tmp_path):
    from vfmtok.encode import EncodeConfig, encode_images, reconstruct_images
    from vfmtok.tokenizer.api import load_tokenizer as load

    r = encode_images(EncodeConfig(tokenizer=tiny_tokenizer_dir, out=tmp_path / "e", data="sample", limit=3,
                                   device="cpu"))
    tok = load(tiny_tokenizer_dir)
    with np.load(r["path"]) as z:
        assert r["path"].suffix == ".npz" and z["ids"].shape == (3, tok.num_tokens)
        assert np.array_equal(z["ids"], r["ids"].numpy()) and int(z["codebook_size"]) == tok.codebook_size
    rec = reconstruct_images(EncodeConfig(tokenizer=tiny_tokenizer_dir, out=tmp_path / "r.png", data="sample",
                                          limit=2, device="cpu"))
    assert rec["num_images"] == 2 and rec["path"].is_file() and 0.0 < rec["mean_psnr"] < 100.0


def test_extract_dataset_counts_views(tiny_tokenizer_dir, tmp_path):
    from vfmtok.data.codes import CodeDataset
    from vfmtok.train.extract import ExtractConfig, extract_dataset

    r = extract_dataset(ExtractConfig(tokenizer=tiny_tokenizer_dir, out=tmp_path / "c", data="sample",
                                      split="val", limit_per_class=1, device="cpu"))
    assert r["num_images"] == 10 and r["views"] == 2 and r["out"] == tmp_path / "c"
    assert len(CodeDataset(r["out"])) == 10


@pytest.mark.parametrize("arch", ["vfmtok", "vqgan"])
def test_tokenizer_loads_on_meta_like_a_copy_load_and_draws_no_random_numbers(tmp_path, arch):
    from helpers import build_tiny_tokenizer

    from vfmtok.tokenizer.api import VFMTokenizer
    from vfmtok.tokenizer.build import build_tokenizer
    from vfmtok.utils.pretrained import load_pretrained

    folder = build_tiny_tokenizer(tmp_path / "tok", arch=arch, seed=3)
    torch.manual_seed(123)
    before = torch.get_rng_state()
    tok = VFMTokenizer.from_pretrained(folder)
    assert torch.equal(torch.get_rng_state(), before)  # no random init drawn and thrown away
    tensors = list(tok.model.parameters()) + list(tok.model.buffers())
    assert tensors and all(t.device.type == "cpu" for t in tensors)  # nothing left on the meta device
    # the old way: a full (random) build, then a copy of the checkpoint's tensors into it
    state, _, _ = load_pretrained(folder, ("vfmtok", "vqgan"), required=("model",))
    old = build_tokenizer(tok.config)
    old.load_trainable_state_dict(state)
    old = VFMTokenizer(old, folder)
    dtypes = lambda m: {k: v.dtype for k, v in m.state_dict().items()}  # noqa: E731
    assert dtypes(old.model) == dtypes(tok.model)
    images = torch.rand(3, 3, tok.image_size, tok.image_size) * 2 - 1
    ids = tok.encode(images)
    assert torch.equal(ids, old.encode(images)) and ids.unique().numel() > 1
    assert torch.equal(tok.decode(ids), old.decode(ids))
    if arch == "vfmtok":
        assert torch.equal(tok.model.region.reference_points, old.model.region.reference_points)
