"""Code extraction into memory-mapped shards: views, index facts, resume, mismatch errors, the training dataset."""

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from vfmtok.data.codes import CodeDataset, read_index
from vfmtok.generator.pairing import check_codes_match, tokenizer_facts
from vfmtok.data.imagefolder import ImageFolderDataset, center_crop_resize, to_tensor
from vfmtok.data.imagefolder import make_views
from vfmtok.train.extract import extract_codes
from vfmtok.utils.errors import VFMTokError


class FakeTokenizer:
    """Stand-in for the tokenizer contract: ids = 4-level colour of 4x4 average-pooled cells; decode = upsample."""

    image_size, token_grid, num_tokens, codebook_size, levels = 16, (4, 4), 16, 64, 4
    class_names = None

    def __init__(self, checkpoint_hash: str = "fake0000", fail_after: int | None = None):
        self.checkpoint_hash = checkpoint_hash
        self.checkpoint_path = Path("/nonexistent/fake-tokenizer")
        self.fail_after, self.calls = fail_after, 0

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            raise KeyboardInterrupt  # simulates a killed run
        x = F.avg_pool2d(images.float(), self.image_size // 4)
        q = ((x + 1) / 2 * self.levels).floor().clamp(0, self.levels - 1).long()
        return (q[:, 0] * 16 + q[:, 1] * 4 + q[:, 2]).flatten(1)

    def decode(self, ids: torch.Tensor) -> torch.Tensor:
        q = torch.stack([ids // 16, ids // 4 % 4, ids % 4], 1).float()
        x = ((q + 0.5) / self.levels * 2 - 1).view(-1, 3, 4, 4)
        return F.interpolate(x, scale_factor=self.image_size // 4, mode="nearest")


def make_image_folder(root: Path, classes=("apple", "golf ball", "zebra"), per_class: int = 3, seed: int = 0) -> Path:
    """Class folders of small random-block PNGs (left/right halves differ so flips change the ids)."""
    rng = np.random.default_rng(seed)
    for c in classes:
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            blocks = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
            Image.fromarray(np.kron(blocks, np.ones((6, 5, 1), np.uint8))).save(root / c / f"{i}.png")
    return root


@pytest.fixture()
def folder_ds(tmp_path):
    return ImageFolderDataset(make_image_folder(tmp_path / "imgs"), 16)


def test_extract_writes_center_and_flip_views(folder_ds, tmp_path):
    tok = FakeTokenizer()
    out = extract_codes(tok, folder_ds, tmp_path / "codes", batch_size=4, shard_size=4)
    idx = read_index(out)
    assert idx["num_images"] == idx["done"] == 9 and idx["num_views"] == 2
    assert [s["count"] for s in idx["shards"]] == [4, 4, 1]
    assert idx["tokenizer"] == tokenizer_facts(tok) and idx["tokenizer"]["token_grid"] == [4, 4]
    assert idx["class_names"] == ["apple", "golf ball", "zebra"] and idx["dtype"] == "uint16"
    codes = np.concatenate([np.load(out / s["codes"]) for s in idx["shards"]])
    labels = np.concatenate([np.load(out / s["labels"]) for s in idx["shards"]])
    assert codes.shape == (9, 2, 16) and labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    for i in range(9):
        img = center_crop_resize(folder_ds.read(i), 16)
        x = torch.stack([to_tensor(img), to_tensor(img.transpose(Image.FLIP_LEFT_RIGHT))])
        assert np.array_equal(codes[i], tok.encode(x).numpy())
    assert (codes[:, 0] != codes[:, 1]).any()  # the flip really is a different view


def test_ten_crop_views_are_crops_and_mirrors(folder_ds):
    views = make_views(folder_ds.read(0), 16, ten_crop=True, crop_range=1.25)
    assert len(views) == 10 and all(v.size == (16, 16) for v in views)
    arrs = [np.asarray(v) for v in views]
    for a, b in zip(arrs[0::2], arrs[1::2]):
        assert np.array_equal(a[:, ::-1], b)
    assert len({a.tobytes() for a in arrs[0::2]}) == 5  # five distinct crop positions
    assert len(make_views(folder_ds.read(0), 16)) == 2


def test_resume_after_interruption_matches_uninterrupted_run(folder_ds, tmp_path):
    ref = extract_codes(FakeTokenizer(), folder_ds, tmp_path / "ref", batch_size=2, shard_size=4)
    with pytest.raises(KeyboardInterrupt):
        extract_codes(FakeTokenizer(fail_after=2), folder_ds, tmp_path / "part", batch_size=2, shard_size=4)
    assert read_index(tmp_path / "part", require_complete=False)["done"] == 4
    with pytest.raises(VFMTokError, match="incomplete"):
        CodeDataset(tmp_path / "part")
    resumed = FakeTokenizer()
    extract_codes(resumed, folder_ds, tmp_path / "part", batch_size=2, shard_size=4)
    assert resumed.calls == 3  # only the remaining 5 images (batches of 2) were encoded
    for s in read_index(ref)["shards"]:
        assert np.array_equal(np.load(ref / s["codes"]), np.load(tmp_path / "part" / s["codes"]))
        assert np.array_equal(np.load(ref / s["labels"]), np.load(tmp_path / "part" / s["labels"]))


def test_refuses_to_mix_tokenizers_in_one_folder(folder_ds, tmp_path):
    extract_codes(FakeTokenizer(), folder_ds, tmp_path / "c", batch_size=4)
    with pytest.raises(VFMTokError, match="tokenizer"):
        extract_codes(FakeTokenizer("another"), folder_ds, tmp_path / "c", batch_size=4)


def test_code_dataset_items_and_views(folder_ds, tmp_path):
    out = extract_codes(FakeTokenizer(), folder_ds, tmp_path / "c", batch_size=4, shard_size=4)
    codes = np.concatenate([np.load(out / s["codes"]) for s in read_index(out)["shards"]])
    ds = CodeDataset(out, seed=1)
    assert len(ds) == 9 and ds.num_classes == 3 and ds.class_names[1] == "golf ball"
    seen = set()
    for epoch in range(6):
        ds.set_epoch(epoch)
        for i in range(9):
            ids, label = ds[i]
            assert ids.dtype == torch.long and ids.shape == (16,) and label == i // 3
            v = next(v for v in range(2) if np.array_equal(codes[i, v], ids.numpy()))
            seen.add((i, v))
    assert len(seen) > 9  # both views get used across epochs
    fixed = CodeDataset(out, random_view=False)
    assert all(np.array_equal(fixed[i][0].numpy(), codes[i, 0]) for i in range(9))


def test_recorded_tokenizer_path_is_absolute(tmp_path, monkeypatch):
    # extract-codes run with a relative --tokenizer: the GPT reads the record from its own checkpoint folder
    monkeypatch.chdir(tmp_path)
    tok = FakeTokenizer()
    tok.checkpoint_path = Path("tok/checkpoints/step_0000001")
    assert tokenizer_facts(tok)["checkpoint_path"] == str(tmp_path / "tok" / "checkpoints" / "step_0000001")


def test_mismatch_and_bad_folder_errors(tmp_path):
    facts = tokenizer_facts(FakeTokenizer())
    check_codes_match(facts, 64, 16, (4, 4), "x")
    with pytest.raises(VFMTokError, match="codebook size 64 != GPT vocab_size 128"):
        check_codes_match(facts, 128, 16, (4, 4), "x")
    with pytest.raises(VFMTokError, match="tokens"):
        check_codes_match(facts, 64, 32, (4, 8), "x")
    with pytest.raises(VFMTokError, match="not a codes folder"):
        read_index(tmp_path)
