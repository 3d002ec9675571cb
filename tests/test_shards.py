"""Tar shards: prepare-data round trip and resume, the exact rank x worker split, determinism, LMDB import."""

import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vfmtok.cli import main
from vfmtok.data.prepare import prepare_shards
from vfmtok.data.shards import ShardDataset, expand_braces, is_shard_spec, load_index, rank_slice, shuffled
from vfmtok.utils.errors import VFMTokError


def _folder(root: Path, n: int, classes: int = 3) -> Path:
    """n solid-colour PNGs whose red value is the sample id, spread over class folders."""
    for i in range(n):
        d = root / "train" / f"c{i % classes}"
        d.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (12, 10), (i, 255 - i, 7)).save(d / f"img{i:03d}.png")
    return root


def _ids(batch) -> list[int]:
    """Sample ids back from decoded solid-colour images."""
    red = ((batch[0][:, 0, 0, 0] + 1) * 127.5).round().long()
    return red.tolist()


def _epoch(ds: ShardDataset, workers: int) -> list[list[int]]:
    loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=workers)
    return [_ids(b) for b in loader]


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    root = _folder(tmp_path_factory.mktemp("imgs"), 24)
    return prepare_shards(str(root), root / "shards", shard_size=5, split="train", seed=3)


def test_expand_braces():
    assert expand_braces("a-{008..011}.tar") == ["a-008.tar", "a-009.tar", "a-010.tar", "a-011.tar"]
    assert expand_braces("{x,y}/{1..2}") == ["x/1", "x/2", "y/1", "y/2"]
    with pytest.raises(VFMTokError):
        expand_braces("s-{5..2}.tar")


def test_prepare_round_trip_and_resume(shards):
    idx = load_index(shards)
    assert idx.counts == [5, 5, 5, 5, 4] and idx.classes == ["c0", "c1", "c2"]
    assert is_shard_spec(shards) and is_shard_spec(str(shards / "shard-{000000..000004}.tar"))
    ds = ShardDataset(shards, 8, batch_size=4, train=False, shuffle_buffer=0)
    ids = [i for b in _epoch(ds, 0) for i in b]
    assert sorted(ids) == list(range(24))
    labels = [int(x) for b in torch.utils.data.DataLoader(ds, batch_size=None) for x in b[1]]
    assert labels == [i % 3 for i in ids]
    first = (shards / "shard-000002.tar").read_bytes()
    (shards / "shard-000002.tar").unlink()
    prepare_shards(str(shards.parent), shards, shard_size=5, split="train", seed=3)  # writes only the missing one
    assert (shards / "shard-000002.tar").read_bytes() == first
    assert not list(shards.glob(".*tmp"))
    par = prepare_shards(str(shards.parent), shards.parent / "par", shard_size=5, split="train", seed=3, workers=2)
    assert all((par / f.name).read_bytes() == f.read_bytes() for f in shards.glob("*.tar"))  # same bytes in parallel
    with pytest.raises(VFMTokError, match="another prepare-data plan"):
        prepare_shards(str(shards.parent), shards, shard_size=6, split="train", seed=3)


def test_two_ranks_two_workers_see_each_sample_once(shards):
    seen = []
    for rank in range(2):
        ds = ShardDataset(shards, 8, batch_size=3, rank=rank, world=2, seed=1, shuffle_buffer=4)
        ds.set_epoch(5)
        two = _epoch(ds, 2)
        assert two == _epoch(ds, 0)  # batches do not depend on num_workers
        assert len(two) == ds.batches_per_epoch == 4
        seen += [i for b in two for i in b]
    assert sorted(seen) == list(range(24))


def test_deterministic_order_per_epoch_and_skip(shards):
    ds = ShardDataset(shards, 8, batch_size=2, seed=7, shuffle_buffer=6)
    ds.set_epoch(1)
    a = _epoch(ds, 0)
    assert _epoch(ds, 0) == a
    ds.skip(5)
    assert _epoch(ds, 2) == a[5:]
    ds.set_epoch(2)
    b = _epoch(ds, 0)
    assert b != a and len(b) == len(a)  # another order, and the skip was for epoch 1 only


def test_uneven_epoch_drops_a_tail_never_repeats():
    counts = [5, 5, 5, 5, 5]  # 25 samples, 2 ranks x batch 5: 12 per rank, 2 batches = 10 used
    dropped = set()
    for epoch in range(4):
        owned = []
        for r in range(2):
            segs = rank_slice(counts, 0, epoch, r, 2, 5)
            owned += [(s, j) for s, a, b in segs for j in range(a, b)]
        assert len(owned) == len(set(owned)) == 20
        dropped.add(frozenset({(s, j) for s in range(5) for j in range(5)} - set(owned)))
    assert len(dropped) > 1  # the dropped tail moves between epochs
    assert sorted(shuffled(iter(range(50)), 7, __import__("random").Random(0))) == list(range(50))


def test_bad_shards_give_one_line_errors(tmp_path):
    with tarfile.open(tmp_path / "a.tar", "w") as tf:
        p = tmp_path / "x.jpg"
        p.write_bytes(b"1")
        tf.add(p, arcname="k1.jpg")
    with pytest.raises(VFMTokError, match="lacks"):
        load_index(tmp_path / "a.tar")
    with pytest.raises(VFMTokError, match="not found"):
        load_index(str(tmp_path / "s-{0..3}.tar"))
    assert main(["prepare-data", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2


def test_official_lmdb_layout_converts_and_refuses_code(tmp_path):
    lmdb = pytest.importorskip("lmdb")
    env = lmdb.open(str(tmp_path / "db"), map_size=1 << 24)
    with env.begin(write=True) as txn:
        txn.put(b"num_samples", b"6")
        for i in range(6):
            buf = __import__("io").BytesIO()
            Image.fromarray(np.full((9, 9, 3), 40 * i, np.uint8)).save(buf, format="PNG")
            txn.put(str(i).encode(), pickle.dumps({"image": buf.getvalue(), "label": i % 2}))
    env.close()
    out = prepare_shards(str(tmp_path / "db"), tmp_path / "sh", shard_size=4)
    idx = load_index(out)
    assert idx.counts == [4, 2] and idx.classes == ["0", "1"]
    got = sorted(zip(*[x.tolist() for x in next(iter(ShardDataset(out, 8, batch_size=6, train=False)))[::-1]]))
    assert [lab for lab, _ in got] == [0, 0, 0, 1, 1, 1]
    env = lmdb.open(str(tmp_path / "evil"), map_size=1 << 20)
    with env.begin(write=True) as txn:
        txn.put(b"num_samples", b"1")
        txn.put(b"0", pickle.dumps({"image": b"x", "label": Path("p")}))  # a global reference
    env.close()
    with pytest.raises(VFMTokError, match="references"):
        prepare_shards(str(tmp_path / "evil"), tmp_path / "sh2", shard_size=4)
