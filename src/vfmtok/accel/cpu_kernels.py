"""fp32 CPU kernels for cached decoding (cpu_kernels.c), built once with the system C compiler and called via ctypes.

They serve only inference on the CPU, through `vfmtok.accel.cpu.accelerate`: the packed-weight GEMM, the decode
attention over a blocked KV cache, and the GPT's RMSNorm and SwiGLU gate. Every wrapper checks shapes, dtypes,
devices and contiguity with explicit tests (not asserts, which `python -O` strips) before handing raw pointers to C. Without a C compiler (or with
VFMTOK_CPU_KERNELS=0) everything falls back to torch ops, and `unavailable_reason()` says why. The shared library is
cached under $VFMTOK_CACHE (default ~/.cache/vfmtok)/kernels, keyed by the source, the compiler and the CPU's feature
flags, since it is built with -march=native. It is built with OpenMP only where torch runs on libgomp: the library
then shares torch's thread pool and thread count instead of bringing a second runtime.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import threading
from contextlib import AbstractContextManager
from pathlib import Path

import torch

from vfmtok.utils.config import temporarily
from vfmtok.utils.io import atomic_path, cache_root

SOURCE = Path(__file__).with_name("cpu_kernels.c")
ENABLED = os.environ.get("VFMTOK_CPU_KERNELS", "1") != "0"
PANEL = 32  # columns per packed weight panel (NR in cpu_kernels.c)
BLOCK = 16  # cache positions per attention block (BLK in cpu_kernels.c)
# Below this many multiply-adds a call runs on one thread (waking OpenMP's threads costs a few us). GPT-B sampling on
# 2 threads, batch 8 / 32: 517 / 1233 tok/s at 2^20, 387 / 1106 at 2^25.
PARALLEL_MIN_WORK = 1 << 18

_lock = threading.Lock()
_lib: ctypes.CDLL | None = None
_reason: str | None = None


def _check(ok: bool, what: str) -> None:
    """Raise ValueError unless ok: the C side trusts every size it is given."""
    if not ok:
        raise ValueError(f"cpu_kernels: {what}")


def _f32_cpu(*tensors: torch.Tensor) -> bool:
    return all(t.dtype == torch.float32 and t.device.type == "cpu" for t in tensors)


def enabled(flag: bool) -> AbstractContextManager[None]:
    """Within the block, the kernels are used only if `flag` (VFMTOK_CPU_KERNELS=0 sets the default to off)."""
    return temporarily(sys.modules[__name__], "ENABLED", flag)


def cache_dir() -> Path:
    """Where built kernels are kept ($VFMTOK_CACHE or ~/.cache/vfmtok, then /kernels)."""
    return cache_root() / "kernels"


def _compiler() -> str:
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if not cc:
        raise RuntimeError("no C compiler (cc, gcc or clang) on PATH")
    return cc


def _cpu_flags() -> str:
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor()
    return next((ln for ln in info.splitlines() if ln.startswith(("flags", "Features"))), "")


class _CompileError(Exception):
    pass


def _torch_uses_libgomp() -> bool:
    try:
        return "libgomp" in Path("/proc/self/maps").read_text()
    except OSError:  # no /proc (macOS): torch there uses LLVM's libomp
        return False


def _build(cc: str, out: Path, openmp: bool) -> None:
    error = "?"
    # -march=native on x86, -mcpu=native on Arm; -fopenmp where the compiler has it (else one thread)
    omp = ["-fopenmp"] if openmp else []
    for arch in (["-march=native", *omp], ["-mcpu=native", *omp], omp, []):
        try:
            with atomic_path(out) as tmp:  # renamed over `out` only if the compiler succeeded
                cmd = [cc, "-O3", *arch, "-std=gnu11", "-shared", "-fPIC", "-o", str(tmp), str(SOURCE), "-lm"]
                res = subprocess.run(cmd, capture_output=True, text=True)
                if res.returncode != 0:
                    raise _CompileError((res.stderr.strip().splitlines() or ["?"])[-1])
            return
        except _CompileError as e:
            error = str(e)
    raise RuntimeError(f"{cc} could not build {SOURCE.name}: {error}")


def _load() -> ctypes.CDLL:
    cc = _compiler()
    version = subprocess.run([cc, "--version"], capture_output=True, text=True).stdout.split("\n")[0]
    openmp = _torch_uses_libgomp()
    key = hashlib.sha256("\n".join([SOURCE.read_text(), cc, version, platform.machine(), _cpu_flags(), str(openmp)]).encode())
    out = cache_dir() / f"cpu_kernels-{key.hexdigest()[:16]}.so"
    if not out.exists():
        _build(cc, out, openmp)
    lib = ctypes.CDLL(str(out))
    ptr, n, f32 = ctypes.c_void_p, ctypes.c_long, ctypes.c_float
    lib.pack_rows.argtypes = lib.pack_weight.argtypes = [ptr, ptr, n, n]
    lib.gemm_packed.argtypes = [ptr, ptr, ptr, n, n, n, ctypes.c_int]
    lib.decode_attention.argtypes = [ptr, ptr, ptr, ptr, ptr, n, n, n, n, f32, ctypes.c_int]
    lib.rms_norm.argtypes = [ptr, ptr, ptr, n, n, f32]
    lib.silu_mul.argtypes = [ptr, ptr, ptr, n]
    for fn in (lib.pack_weight, lib.pack_rows, lib.gemm_packed, lib.decode_attention, lib.rms_norm, lib.silu_mul):
        fn.restype = None
    return lib


def library() -> ctypes.CDLL | None:
    """The compiled kernels (built on first call), or None when disabled or unbuildable (see unavailable_reason)."""
    global _lib, _reason
    if not ENABLED:
        return None
    if _lib is not None or _reason is not None:  # settled: no lock on the per-op path
        return _lib
    with _lock:
        if _lib is None and _reason is None:
            try:
                _lib = _load()
            except (OSError, RuntimeError, subprocess.SubprocessError) as e:
                _reason = str(e)
    return _lib


def available() -> bool:
    """Whether the compiled kernels can be used."""
    return library() is not None


def unavailable_reason() -> str | None:
    """Why the kernels are not used (None when they are)."""
    if not ENABLED:
        return "disabled by VFMTOK_CPU_KERNELS=0 or vfmtok.accel.cpu_kernels.enabled(False)"
    return None if available() else _reason


def _parallel(work: int) -> int:
    return int(torch.get_num_threads() > 1 and work >= PARALLEL_MIN_WORK)


def pack_weight(weight: torch.Tensor) -> torch.Tensor:
    """W (N, K) -> panels (ceil(N / 32), K, 32), zero-padded, the layout gemm_packed streams."""
    _check(weight.dim() == 2 and weight.device.type == "cpu", f"pack_weight needs a 2-D CPU weight, got {tuple(weight.shape)}")
    n, k = weight.shape
    w = weight.detach().float().contiguous()
    packed = torch.empty(-(-n // PANEL), k, PANEL)
    library().pack_weight(w.data_ptr(), packed.data_ptr(), n, k)
    return packed


def packed_linear(x: torch.Tensor, packed: torch.Tensor, out_features: int) -> torch.Tensor:
    """x (..., K) W^T for fp32 CPU x and a pack_weight(W) panel tensor."""
    lib = library()
    k = x.shape[-1]
    _check(_f32_cpu(x, packed) and packed.is_contiguous(), "packed_linear needs fp32 CPU tensors and contiguous panels")
    _check(packed.dim() == 3 and packed.shape[1] == k and packed.shape[2] == PANEL
           and packed.shape[0] * PANEL >= out_features > (packed.shape[0] - 1) * PANEL,
           f"packed_linear: panels {tuple(packed.shape)} do not fit x (..., {k}) -> {out_features} outputs")
    x2 = x.reshape(-1, k).contiguous()
    m = x2.shape[0]
    xp = torch.empty(-(-m // 8) * 8 * k)  # rows packed for broadcasting (MR = 8)
    y = torch.empty(m, out_features)
    lib.pack_rows(x2.data_ptr(), xp.data_ptr(), m, k)
    lib.gemm_packed(xp.data_ptr(), packed.data_ptr(), y.data_ptr(), m, out_features, k, _parallel(m * k * out_features))
    return y.view(*x.shape[:-1], out_features)


def attention_supported(device: torch.device | str, dtype: torch.dtype, head_dim: int) -> bool:
    """Whether decode_attention handles this cache (fp32 on the CPU, head_dim a multiple of 16 up to 256)."""
    return (torch.device(device).type == "cpu" and dtype == torch.float32 and head_dim % 16 == 0 and head_dim <= 256
            and available())


def decode_attention(q: torch.Tensor, kv: torch.Tensor, length: int, scale: float, k_new: torch.Tensor | None = None,
                     v_new: torch.Tensor | None = None) -> torch.Tensor:
    """softmax(q K^T * scale) V, one query per row: q (R, D); kv (R, blocks, 2, 16 D) of [K (D, 16) | V (16, D)].

    With k_new, v_new (R, D) these are first written into kv at position length - 1, in the same pass.
    """
    lib = library()
    _check(q.dim() == 2 and kv.dim() == 4 and _f32_cpu(q, kv) and kv.is_contiguous(),
           "decode_attention needs q (R, D) and a contiguous kv (R, blocks, 2, 16 D), fp32 on the CPU")
    rows, d = q.shape
    _check(kv.shape[0] == rows and kv.shape[2] == 2 and kv.shape[-1] == BLOCK * d and d % 16 == 0 and d <= 256,
           f"decode_attention: kv {tuple(kv.shape)} does not fit q {tuple(q.shape)}")
    _check(0 < length <= kv.shape[1] * BLOCK, f"decode_attention: length {length} outside 1..{kv.shape[1] * BLOCK}")
    q = q.contiguous()
    out = torch.empty_like(q)
    new = [None, None]
    if k_new is not None:
        _check(v_new is not None and k_new.numel() == v_new.numel() == rows * d and _f32_cpu(k_new, v_new),
               "decode_attention: k_new and v_new must be fp32 CPU tensors of R x D entries")
        new = [t.reshape(rows, d).contiguous() for t in (k_new, v_new)]
    lib.decode_attention(q.data_ptr(), *(None if t is None else t.data_ptr() for t in new), kv.data_ptr(),
                         out.data_ptr(), rows, d, length, kv.stride(0), scale, _parallel(2 * rows * length * d))
    return out


def for_inference(*tensors: torch.Tensor) -> bool:
    """Whether the elementwise kernels below may replace torch ops: kernels on, no autograd, fp32 CPU tensors.

    They save the per-op overhead of small decode-step tensors (an RMSNorm is 8 torch ops, ~75 us at 2 threads).
    """
    return (ENABLED and not torch.is_grad_enabled() and all(t.dtype == torch.float32 and t.device.type == "cpu"
                                                             for t in tensors) and available())


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """x / sqrt(mean(x^2, -1) + eps) * weight, over the last dim."""
    n = x.shape[-1]
    _check(_f32_cpu(x, weight) and weight.numel() == n, f"rms_norm needs fp32 CPU x (..., {n}) and a weight of {n}")
    x = x.contiguous()
    out = torch.empty_like(x)
    library().rms_norm(x.data_ptr(), weight.contiguous().data_ptr(), out.data_ptr(), x.numel() // n, n, eps)
    return out


def silu_mul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """silu(a) * b for same-shape tensors (SwiGLU)."""
    _check(_f32_cpu(a, b) and a.shape == b.shape, f"silu_mul needs same-shape fp32 CPU tensors, got {a.shape}, {b.shape}")
    a, b = a.contiguous(), b.contiguous()
    out = torch.empty_like(a)
    library().silu_mul(a.data_ptr(), b.data_ptr(), out.data_ptr(), a.numel())
    return out
