"""Shared pieces of benchmarks/official_training.py: loading official code from a checkout path (never copied into
this repository), feeding both arms the same dropout masks, and comparing tensors.

Official trainers import whole frameworks (accelerate, open_clip, the data pipelines) around the few functions one
step needs; `load_defs` executes only the named top-level definitions of such a file, read from the checkout.
"""

from __future__ import annotations

import ast
import contextlib
import importlib
import importlib.util
import math
import sys
import time
import types
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
import torch.nn.functional as F


@contextlib.contextmanager
def official_root(root: Path, packages: tuple[str, ...]) -> Iterator[None]:
    """Import from `root` first; afterwards forget its top-level `packages` (LlamaGen and 1d-tokenizer both have a
    top-level `utils`), keeping the modules already imported alive through their references."""
    sys.path.insert(0, str(root))
    try:
        yield
    finally:
        sys.path.remove(str(root))
        for name in list(sys.modules):
            if name.split(".")[0] in packages:
                del sys.modules[name]


def load_file(path: Path, name: str) -> types.ModuleType:
    """Execute one official source file as module `name` (its own imports resolve through sys.path)."""
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def load_defs(path: Path, names: tuple[str, ...], env: dict[str, Any]) -> dict[str, Any]:
    """The named top-level functions/classes of an official file, executed in `env` (the file's other imports are
    skipped: they pull in frameworks the step does not use)."""
    tree = ast.parse(Path(path).read_text(), filename=str(path))
    keep = [n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef)) and n.name in names]
    missing = set(names) - {n.name for n in keep}
    if missing:
        raise SystemExit(f"{path}: no top-level {sorted(missing)} (is this the official checkout?)")
    ns = dict(env)
    exec(compile(ast.Module(body=keep, type_ignores=[]), str(path), "exec"), ns)
    return {n: ns[n] for n in names}


def import_module(root: Path, module: str, packages: tuple[str, ...]) -> types.ModuleType:
    """`import module` with `root` first on sys.path."""
    with official_root(root, packages):
        return importlib.import_module(module)


class MaskBank:
    """Deterministic dropout for both arms: the k-th dropout call of a pass draws its mask from seed + k.

    Installed over F.dropout and F.scaled_dot_product_attention (which then runs the attention in plain ops, so its
    attention-probability dropout comes from the bank too). Records (shape, p) of every call, so two arms that drop
    at different places are told apart, not just compared by their losses.
    """

    def __init__(self, seed: int):
        self.seed, self.calls = seed, []

    def reset(self) -> None:
        self.calls = []

    def dropout(self, x: torch.Tensor, p: float = 0.5, training: bool = True, inplace: bool = False) -> torch.Tensor:
        if not training or p == 0.0:
            return x
        # Drawn at every size rounded up to a multiple of 8, then cut: element (i, j, ...) gets the same draw in a
        # sequence one token shorter (RAR's official pass feeds the last token too and drops its logit).
        big = tuple(-(-n // 8) * 8 for n in x.shape)
        g = torch.Generator().manual_seed(self.seed * 100003 + len(self.calls))
        self.calls.append((big, float(p)))
        keep = (torch.rand(big, generator=g) >= p)[tuple(slice(0, n) for n in x.shape)].to(x.dtype)
        return x * keep / (1.0 - p)

    def sdpa(self, q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
        s = q @ k.transpose(-2, -1) * (scale if scale is not None else 1.0 / math.sqrt(q.shape[-1]))
        if is_causal:
            s = s.masked_fill(~torch.ones(s.shape[-2:], dtype=torch.bool, device=s.device).tril(), float("-inf"))
        if attn_mask is not None:
            s = s.masked_fill(~attn_mask, float("-inf")) if attn_mask.dtype == torch.bool else s + attn_mask
        a = s.softmax(-1)
        return self.dropout(a, dropout_p) @ v if dropout_p > 0 else a @ v

    @contextlib.contextmanager
    def installed(self) -> Iterator["MaskBank"]:
        saved = F.dropout, F.scaled_dot_product_attention
        F.dropout, F.scaled_dot_product_attention = self.dropout, self.sdpa
        try:
            yield self
        finally:
            F.dropout, F.scaled_dot_product_attention = saved


@torch.no_grad()
def perturb(model: torch.nn.Module, std: float = 0.02, seed: int = 0) -> None:
    """Add noise to every parameter: zero-initialised ones (LlamaGen's head, adaLN-zero, RAR's cls token) would
    otherwise pass no gradient and hide decay differences, as a step from a trained state would not."""
    g = torch.Generator().manual_seed(seed)
    for p in model.parameters():
        p.add_(torch.randn(p.shape, generator=g, dtype=torch.float64).to(p.dtype) * std)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """||a - b|| / ||b|| (absolute when b is zero)."""
    a, b = a.detach().double(), b.detach().double()
    d, n = float((a - b).norm()), float(b.norm())
    return d / n if n > 0 else d


def compare(ours: dict[str, torch.Tensor], theirs: dict[str, torch.Tensor], apart: tuple[str, ...] = ()) -> dict[str, Any]:
    """Worst per-tensor relative error over matching keys (both must have the same keys and shapes); keys ending
    with one of `apart` are reported on their own (their reference is rounding noise, see the caller)."""
    if set(ours) != set(theirs):
        extra, missing = sorted(set(ours) - set(theirs)), sorted(set(theirs) - set(ours))
        return {"max_rel": float("inf"), "error": f"keys differ: ours only {extra[:3]}, official only {missing[:3]}"}
    errs = {}
    for k in ours:
        if ours[k].shape != theirs[k].shape:
            return {"max_rel": float("inf"), "error": f"{k}: shape {tuple(ours[k].shape)} vs {tuple(theirs[k].shape)}"}
        errs[k] = rel_err(ours[k], theirs[k])
    kept = {k: e for k, e in errs.items() if not k.endswith(apart) or not apart}
    worst = max(kept, key=kept.get)
    out = {"max_rel": kept[worst], "worst": worst, "tensors": len(kept)}
    if len(kept) < len(errs):
        out["apart"] = {k: {"rel": e, "official_norm": float(theirs[k].double().norm())}
                        for k, e in errs.items() if k not in kept}
    return out


def large_grad_part(d: dict[str, torch.Tensor], g: dict[str, torch.Tensor], eps: float = 1e-8,
                    factor: float = 100.0) -> dict[str, torch.Tensor]:
    """d with the elements whose (reference) gradient is within `factor` x AdamW's eps zeroed: the part of a first
    AdamW update that does not divide rounding noise by a number near eps."""
    return {k: torch.where(g[k].abs() > factor * eps, v, torch.zeros_like(v)) for k, v in d.items()}


def map_exact(fn: Callable[[dict], dict], d: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Apply an import key map (which renames, splits and joins tensors but converts them to fp32) without losing
    fp64 precision: the high and low fp32 parts are mapped apart and added back."""
    if all(v.dtype != torch.float64 for v in d.values()):
        return fn(d)
    hi = {k: v.float() for k, v in d.items()}
    lo = {k: (v - hi[k].double()).float() for k, v in d.items()}
    mh, ml = fn(hi), fn(lo)
    return {k: mh[k].double() + ml[k].double() for k in mh}


def grads(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Parameter gradients by name (zeros where a parameter got none)."""
    return {n: (p.grad if p.grad is not None else torch.zeros_like(p)).detach().clone()
            for n, p in model.named_parameters() if p.requires_grad}


def params(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Parameters by name, detached copies."""
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def delta(after: dict[str, torch.Tensor], before: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """after - before per key (the update an optimizer step made)."""
    return {k: after[k] - before[k] for k in after}


def time_pair(step_a: Callable[[], None], step_b: Callable[[], None], warmup: int, reps: int) -> dict[str, float]:
    """Median seconds per call of two step functions, interleaved (a, b, a, b, ...) so machine load hits both."""
    for _ in range(warmup):
        step_a()
        step_b()
    ta, tb = [], []
    for _ in range(reps):
        t = time.perf_counter()
        step_a()
        ta.append(time.perf_counter() - t)
        t = time.perf_counter()
        step_b()
        tb.append(time.perf_counter() - t)
    ma, mb = sorted(ta)[len(ta) // 2], sorted(tb)[len(tb) // 2]
    return {"ours_s": ma, "official_s": mb, "speedup": mb / ma}
