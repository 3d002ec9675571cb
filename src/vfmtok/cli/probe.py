"""`vfmtok probe`: linear probing on frozen tokenizer features."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from vfmtok.cli import args as A
from vfmtok.cli.eval_options import add_run_arguments, add_tokenizer_argument, prepare, tokenizer_path
from vfmtok.eval.commands import load_tokenizer
from vfmtok.eval.imagesets import ImageSet, open_image_set, subset_indices
from vfmtok.eval.probe import extract_features, train_linear_probe
from vfmtok.eval.records import checkpoint_record, make_record, markdown_table, print_result
from vfmtok.utils.errors import VFMTokError, require


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `vfmtok probe`."""
    add_tokenizer_argument(parser)
    A.add(parser, "data", help=f"{A.DATA_HELP}, with train/val splits")
    parser.add_argument("--train-split", default="train")
    parser.add_argument("--val-split", default="val")
    parser.add_argument("--weight-decay", type=A.non_negative_float, default=1e-3,
                        help="L2 penalty (wd/2 * ||W||^2) on the linear weights")
    parser.add_argument("--max-iter", type=A.positive_int, default=200, help="L-BFGS iterations")
    add_run_arguments(parser, "at most this many images per split (a seeded random subset)")


def _open_split(data: str, res: int, split: str) -> ImageSet:
    images = open_image_set(data, res, split=split)
    require(images.labels is not None, f"{data} is not a dataset with class sub-folders; linear probing needs labels")
    return images


def run(args: argparse.Namespace) -> int:
    """Extract features of both splits once, fit one probe per feature kind, report top-1 on val."""
    prepare(args)
    torch.manual_seed(args.seed)
    tok = load_tokenizer(tokenizer_path(args), args.device)
    res = int(tok.image_size)
    train, val = _open_split(args.data, res, args.train_split), _open_split(args.data, res, args.val_split)
    require(train.description.get("location") != val.description.get("location"),
            f"{args.data} has no separate '{args.train_split}' and '{args.val_split}' splits (both read {train.description.get('location')})")
    require(train.class_names == val.class_names,
            f"train and val splits of {args.data} have different classes ({len(train.class_names)} vs {len(val.class_names)})")
    idx_tr = subset_indices(len(train), args.num_images, args.seed)
    idx_va = subset_indices(len(val), args.num_images, args.seed + 1)
    f_tr, y_tr = extract_features(tok, train, idx_tr, args.batch_size, args.device, "features train")
    f_va, y_va = extract_features(tok, val, idx_va, args.batch_size, args.device, "features val")
    num_classes = len(train.class_names)
    results, rows = {}, []
    for key in sorted(f_tr):
        if key not in f_va:
            raise VFMTokError(f"feature '{key}' present for train but not for val")
        r = train_linear_probe(f_tr[key], y_tr, f_va[key], y_va, num_classes, args.weight_decay, args.max_iter)
        results[key] = {**r, "dim": int(f_tr[key].shape[1])}
        rows.append([Path(tok.checkpoint_path).name, key, results[key]["dim"], len(idx_tr), len(idx_va), num_classes,
                     f"{r['top1_val']:.1%}", f"{r['top1_train']:.1%}"])
    notes = ["features standardised with train mean/std; linear layer fit full-batch by L-BFGS (zero init) on "
             f"cross-entropy + {args.weight_decay:g}/2 * ||W||^2, {args.max_iter} iterations",
             f"chance level {1 / num_classes:.1%}"]
    if "cls" not in f_tr:
        notes.append("this tokenizer has no CLS token: only the mean of the quantised token embeddings is probed")
    record = make_record(
        "probe", metrics=results, num_images=len(idx_tr) + len(idx_va), resolution=res, seed=args.seed,
        checkpoints={"tokenizer": checkpoint_record(tok.checkpoint_path)},
        data={"source": str(args.data), "train_split": args.train_split, "val_split": args.val_split,
              "num_train": len(idx_tr), "num_val": len(idx_va), "classes": train.class_names},
        feature_networks=[{"name": "tokenizer.probe_features", "keys": sorted(f_tr)}], notes=notes,
        device=str(args.device), args=args, weight_decay=args.weight_decay, max_iter=args.max_iter)
    table = markdown_table(["tokenizer", "feature", "dim", "train", "val", "classes", "top-1 val↑", "top-1 train"], rows)
    print_result(table, notes, args.out, record)
    return 0
