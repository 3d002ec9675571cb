"""Vector quantiser with an L2-normalised, low-dimensional codebook (nearest code = max cosine)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class QuantOutput:
    """Straight-through codes and the VQ loss terms."""

    z_q: torch.Tensor          # (B, N, d) normalised codes, gradients flow to the encoder (straight-through)
    indices: torch.Tensor      # (B, N) int64
    codebook_loss: torch.Tensor
    commit_loss: torch.Tensor  # already multiplied by beta


class VectorQuantizer(nn.Module):
    """z -> nearest of K unit-norm codes in d dims; codebook loss + beta * commitment loss."""

    def __init__(self, codebook_size: int, dim: int, beta: float = 0.25, usage_window: int = 65536):
        super().__init__()
        self.codebook_size, self.dim, self.beta = codebook_size, dim, beta
        self.embedding = nn.Embedding(codebook_size, dim)
        nn.init.uniform_(self.embedding.weight, -1.0 / codebook_size, 1.0 / codebook_size)
        with torch.no_grad():
            self.embedding.weight.copy_(F.normalize(self.embedding.weight, dim=-1))
        # Rolling window of recent ids for the usage statistic; not saved in checkpoints (so real even on meta).
        self.register_buffer("_recent", torch.full((usage_window,), -1, dtype=torch.long, device="cpu"),
                             persistent=False)
        # The write position is a tensor: as a Python int, torch.compile guards on its value and recompiles the
        # training forward at every step.
        self.register_buffer("_recent_pos", torch.zeros((), dtype=torch.long, device="cpu"), persistent=False)

    def codebook(self) -> torch.Tensor:
        """(K, d) unit-norm codes."""
        return F.normalize(self.embedding.weight, dim=-1)

    def _cosine(self, z: torch.Tensor) -> torch.Tensor:
        """(rows, K) cosine of each row of z (..., d) with every code."""
        return F.normalize(z, dim=-1).reshape(-1, self.dim) @ self.codebook().t()

    def nearest(self, z: torch.Tensor) -> torch.Tensor:
        """Indices of the max-cosine code for each row of z (..., d)."""
        return self._cosine(z).argmax(dim=-1).view(z.shape[:-1])

    def nearest_topk(self, z: torch.Tensor, k: int) -> torch.Tensor:
        """(..., k) indices of the k max-cosine codes for each row of z (..., d), nearest first."""
        return self._cosine(z).topk(k, dim=-1).indices.view(*z.shape[:-1], k)

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        """Ids (...) -> unit-norm codes (..., d)."""
        return F.embedding(indices, self.codebook())

    def forward(self, z: torch.Tensor) -> QuantOutput:
        """Quantise z (B, N, d); computed in fp32 for stable argmax."""
        z = F.normalize(z.float(), dim=-1)
        idx = self.nearest(z)
        z_q = self.lookup(idx)
        codebook_loss = F.mse_loss(z_q, z.detach())
        commit_loss = self.beta * F.mse_loss(z, z_q.detach())
        z_st = z + (z_q - z).detach()
        if self.training:
            self._record(idx)
        return QuantOutput(z_st, idx, codebook_loss, commit_loss)

    @torch.no_grad()
    def _record(self, idx: torch.Tensor) -> None:
        # This rank's ids only: the statistic is reduced across ranks when it is read (`histogram`), not per forward.
        w = self._recent.numel()
        flat = idx.flatten()[-w:]  # at most one window: the positions written below are then distinct
        where = (self._recent_pos + torch.arange(flat.numel(), device=flat.device)) % w
        self._recent.index_copy_(0, where, flat)
        self._recent_pos.add_(flat.numel()).remainder_(w)

    @torch.no_grad()
    def histogram(self) -> torch.Tensor:
        """(K,) counts of the ids in the recent-ids windows of all ranks (a collective under DDP: every rank calls it)."""
        valid = self._recent >= 0
        counts = torch.zeros(self.codebook_size, dtype=torch.long, device=self._recent.device)
        counts.index_add_(0, self._recent.clamp_min(0), valid.long())  # fixed shapes: no host read of the window
        if dist.is_initialized():
            dist.all_reduce(counts)
        return counts

    @torch.no_grad()
    def usage(self) -> dict[str, float]:
        """Fraction of codes used and perplexity over the recent-ids windows of all ranks (a collective under DDP)."""
        s = histogram_stats(self.histogram())
        return {"usage": s["codebook_usage"], "perplexity": s["perplexity"]}

    @torch.no_grad()
    def reseed_dead_codes(self, z: torch.Tensor, generator: torch.Generator | None = None) -> int:
        """Replace codes unused in every rank's window with random encoder outputs from z (..., d); returns how many.

        Reads the device (how many codes are dead) and runs collectives: call it on every rank, at its own steps."""
        counts = self.histogram()  # the same on every rank, so every rank replaces the same codes
        if int(counts.sum()) == 0:
            return 0
        dead = (counts == 0).nonzero().flatten()
        if dead.numel() == 0:
            return 0
        pool = F.normalize(z.detach().float().reshape(-1, self.dim), dim=-1)
        pick = torch.randint(0, pool.shape[0], (dead.numel(),), generator=generator, device="cpu").to(pool.device)
        new = pool[pick] + 1e-3 * torch.randn(dead.numel(), self.dim, generator=generator).to(pool.device)
        if dist.is_initialized():
            dist.broadcast(new, src=0)  # every rank must hold the same codebook
        self.embedding.weight[dead.to(self.embedding.weight.device)] = F.normalize(new, dim=-1).to(self.embedding.weight.dtype)
        self._recent.fill_(-1)  # restart the window so fresh codes get a fair chance
        self._recent_pos.zero_()
        return int(dead.numel())


def histogram_stats(counts: torch.Tensor) -> dict[str, float]:
    """Of an id histogram (K,): fraction of codes used, codes used, perplexity exp(H) and entropy H in bits."""
    total = int(counts.sum())
    used = int((counts > 0).sum())
    if total == 0:
        return {"codebook_usage": 0.0, "codes_used": 0, "perplexity": 0.0, "entropy_bits": 0.0}
    p = counts[counts > 0].double() / total
    ent = float(-(p * p.log()).sum())
    return {"codebook_usage": used / counts.numel(), "codes_used": used, "perplexity": math.exp(ent),
            "entropy_bits": ent / math.log(2)}


def usage_stats(indices: torch.Tensor, codebook_size: int) -> dict[str, float]:
    """{'usage': unique/K, 'perplexity': exp(entropy of the id histogram)} for a set of ids."""
    s = histogram_stats(torch.bincount(indices.flatten().long(), minlength=codebook_size))
    return {"usage": s["codebook_usage"], "perplexity": s["perplexity"]}
