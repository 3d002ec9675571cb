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
        # Rolling window of recent ids for the usage statistic; not saved in checkpoints.
        self.register_buffer("_recent", torch.full((usage_window,), -1, dtype=torch.long), persistent=False)
        self._recent_pos = 0

    def codebook(self) -> torch.Tensor:
        """(K, d) unit-norm codes."""
        return F.normalize(self.embedding.weight, dim=-1)

    def nearest(self, z: torch.Tensor) -> torch.Tensor:
        """Indices of the max-cosine code for each row of z (..., d)."""
        zn = F.normalize(z, dim=-1).reshape(-1, self.dim)
        return (zn @ self.codebook().t()).argmax(dim=-1).view(z.shape[:-1])

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
        flat = idx.flatten()
        if dist.is_initialized():
            gathered = [torch.empty_like(flat) for _ in range(dist.get_world_size())]
            dist.all_gather(gathered, flat)
            flat = torch.cat(gathered)
        n, w = flat.numel(), self._recent.numel()
        flat = flat[-w:]
        n = flat.numel()
        end = self._recent_pos + n
        if end <= w:
            self._recent[self._recent_pos:end] = flat
        else:
            k = w - self._recent_pos
            self._recent[self._recent_pos:] = flat[:k]
            self._recent[: n - k] = flat[k:]
        self._recent_pos = end % w

    @torch.no_grad()
    def usage(self) -> dict[str, float]:
        """Fraction of codes used and perplexity over the recent-ids window."""
        seen = self._recent[self._recent >= 0]
        return usage_stats(seen, self.codebook_size)

    @torch.no_grad()
    def reseed_dead_codes(self, z: torch.Tensor, generator: torch.Generator | None = None) -> int:
        """Replace codes unused in the window with random encoder outputs from z (..., d); returns how many."""
        seen = self._recent[self._recent >= 0]
        if seen.numel() == 0:
            return 0
        used = torch.zeros(self.codebook_size, dtype=torch.bool, device=seen.device)
        used[seen] = True
        dead = (~used).nonzero().flatten()
        if dead.numel() == 0:
            return 0
        pool = F.normalize(z.detach().float().reshape(-1, self.dim), dim=-1)
        pick = torch.randint(0, pool.shape[0], (dead.numel(),), generator=generator, device="cpu").to(pool.device)
        new = pool[pick] + 1e-3 * torch.randn(dead.numel(), self.dim, generator=generator).to(pool.device)
        if dist.is_initialized():
            dist.broadcast(new, src=0)  # every rank must hold the same codebook
        self.embedding.weight[dead.to(self.embedding.weight.device)] = F.normalize(new, dim=-1).to(self.embedding.weight.dtype)
        self._recent.fill_(-1)  # restart the window so fresh codes get a fair chance
        self._recent_pos = 0
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
