"""Dataclass configs: YAML / key=value overrides, type checks with one-line errors."""

import pytest

from vfmtok.tokenizer.config import TrainConfig, get_preset
from vfmtok.utils.config import apply_overrides, from_dict
from vfmtok.utils.errors import VFMTokError


def test_overrides_parse_yaml_values_and_scientific_floats(tmp_path):
    y = tmp_path / "c.yaml"
    y.write_text("train:\n  lr: 3e-4\n  steps: 7\nmodel:\n  levels: [-1]\n")
    cfg = apply_overrides(get_preset("tiny"), ["train.batch_size=5", "train.warmup_steps=1e1"], y)
    assert cfg.train.lr == 3e-4 and isinstance(cfg.train.lr, float)
    assert cfg.train.steps == 7 and cfg.train.batch_size == 5 and cfg.train.warmup_steps == 10
    assert list(cfg.model.levels) == [-1]


def test_overrides_keep_number_like_text_in_text_fields():
    cfg = apply_overrides(get_preset("tiny"), ["train.data=1e5", "train.lr=1e-3"])
    assert cfg.train.data == "1e5" and cfg.train.lr == 1e-3 and isinstance(cfg.train.lr, float)


@pytest.mark.parametrize("bad,msg", [({"steps": "abc"}, "expected int"), ({"steps": 2.5}, "expected int"),
                                     ({"cache_features": "yes"}, "expected true/false"), ({"nope": 1}, "unknown field")])
def test_bad_values_are_named(bad, msg):
    with pytest.raises(VFMTokError, match=msg):
        from_dict(TrainConfig, bad)


def test_bad_override_syntax():
    with pytest.raises(VFMTokError, match="key=value"):
        apply_overrides(get_preset("tiny"), ["train.lr"])
    with pytest.raises(VFMTokError, match="unknown field"):
        apply_overrides(get_preset("tiny"), ["train.bogus=1"])
