"""RAR: the randomized-autoregressive generator (Yu et al. 2024) that VFMTok's best ImageNet numbers use.

A decoder-only transformer conditioned through adaLN-zero (class embedding + a per-position step embedding),
qk-norm, learned absolute position embeddings plus target-aware ones (each input also carries the position of the
token it must predict), a final adaLN layer and a biased head. Sequence: [cls, class, tok_0 .. tok_{N-2}] -> logits
for tok_0 .. tok_{N-1}; in training the tokens may come in any order (`orders`). Sampling is raster order with the
shared KVCache and `generator.generate`. Facts from bytedance/1d-tokenizer modeling/rar.py and CVMI-Lab/VFMTok-RAR.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from vfmtok.generator.pretrained import GeneratorIO
from vfmtok.generator.gpt import KVCache, causal_attention, find_multiple, install_caches
from vfmtok.utils.errors import require
from vfmtok.utils.registry import Registry


@dataclass
class RARConfig:
    """Architecture of the class-conditional RAR (presets in RAR_PRESETS)."""

    vocab_size: int = 16384
    num_tokens: int = 256
    token_grid: tuple[int, int] = (16, 16)  # only checked against the tokenizer (RAR has no 2D positions)
    num_classes: int = 1000  # id num_classes is the null class (CFG)
    dim: int = 768
    n_layer: int = 24
    n_head: int = 16
    mlp_dim: int = 3072
    dropout: float = 0.1  # attention projection and MLP outputs
    attn_dropout: float = 0.1
    class_dropout_prob: float = 0.1
    norm_eps: float = 1e-6
    # The reference tables hold num_tokens + 1024 (positions) and num_tokens + 100 (steps) rows, of which only the
    # first num_tokens + 2 are ever read; kept so that official checkpoints load one to one. Minimum 2.
    pos_slack: int = 1024
    step_slack: int = 100
    init_std: float = 0.02

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_head

    def validate(self) -> None:
        """Raise VFMTokError for inconsistent settings."""
        require(self.dim % self.n_head == 0, f"RAR dim {self.dim} is not divisible by n_head {self.n_head}")
        h, w = self.token_grid
        require(h * w == self.num_tokens, f"RAR token_grid {tuple(self.token_grid)} does not hold num_tokens={self.num_tokens}")
        require(self.vocab_size > 0 and self.num_classes > 0, "RAR vocab_size and num_classes must be positive")
        require(self.pos_slack >= 2 and self.step_slack >= 2, "RAR pos_slack and step_slack must be >= 2")


# name -> architecture fields; data fields (vocab, tokens, grid, classes) come from the tokenizer/codes.
RAR_PRESETS: Registry[dict[str, Any]] = Registry("RAR preset", {
    "RAR-nano": dict(dim=64, n_layer=2, n_head=2, mlp_dim=256, pos_slack=2, step_slack=2),  # tests
    "RAR-tiny": dict(dim=256, n_layer=4, n_head=4, mlp_dim=1024, pos_slack=2, step_slack=2),  # CPU runs
    "RAR-B": dict(dim=768, n_layer=24, n_head=16, mlp_dim=3072),
    "RAR-L": dict(dim=1024, n_layer=24, n_head=16, mlp_dim=4096),
    "RAR-XL": dict(dim=1280, n_layer=32, n_head=16, mlp_dim=5120),  # 1d-tokenizer's RAR-XL (the published 955M)
    "RAR-XL-4096": dict(dim=1280, n_layer=32, n_head=16, mlp_dim=4096),  # VFMTok-RAR configs/.../rar_xl.yaml
    "RAR-XXL": dict(dim=1408, n_layer=40, n_head=16, mlp_dim=6144),
})


def rar_preset_config(name: str, **overrides: Any) -> RARConfig:
    """RARConfig of a named preset with field overrides."""
    cfg = RARConfig(**{**RAR_PRESETS.pick(name), **overrides})
    cfg.validate()
    return cfg


def count_rar_params(cfg: RARConfig) -> int:
    """Analytic parameter count (no allocation)."""
    d, m, hd = cfg.dim, cfg.mlp_dim, cfg.head_dim
    block = (3 * d * d + 3 * d) + 2 * 2 * hd + (d * d + d) + (2 * d * m + m + d) + 2 * 2 * d + (6 * d * d + 6 * d)
    tables = (cfg.vocab_size + cfg.num_classes + 1) * d + 2 * (cfg.num_tokens + cfg.pos_slack) * d \
        + (cfg.num_tokens + cfg.step_slack) * d + d  # + cls token
    return cfg.n_layer * block + tables + (2 * d * d + 2 * d) + (d * cfg.vocab_size + cfg.vocab_size)


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN: x * (1 + scale) + shift."""
    return x * (1 + scale) + shift


class RARAttention(nn.Module):
    """Multi-head self-attention with qkv bias, LayerNorm qk-norm and the shared KVCache for decoding."""

    def __init__(self, cfg: RARConfig):
        super().__init__()
        self.n_head, self.head_dim = cfg.n_head, cfg.head_dim
        self.qkv = nn.Linear(cfg.dim, 3 * cfg.dim)
        self.q_norm = nn.LayerNorm(cfg.head_dim, eps=cfg.norm_eps)
        self.k_norm = nn.LayerNorm(cfg.head_dim, eps=cfg.norm_eps)
        self.proj = nn.Linear(cfg.dim, cfg.dim)
        self.attn_dropout = cfg.attn_dropout
        self.proj_drop = nn.Dropout(cfg.dropout)
        self.kv_cache: KVCache | None = None

    def forward(self, x: torch.Tensor, input_pos: torch.Tensor | None, mask: torch.Tensor | None) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.n_head, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        q, k = self.q_norm(q), self.k_norm(k)
        y = causal_attention(q, k, v, self.kv_cache, input_pos, mask, self.attn_dropout if self.training else 0.0)
        return self.proj_drop(self.proj(y.transpose(1, 2).reshape(B, T, C)))


class RARBlock(nn.Module):
    """adaLN-zero transformer block: shift/scale/gate for attention and for the GELU MLP from the condition."""

    def __init__(self, cfg: RARConfig):
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.dim, eps=cfg.norm_eps)
        self.attn = RARAttention(cfg)
        self.norm2 = nn.LayerNorm(cfg.dim, eps=cfg.norm_eps)
        self.fc1 = nn.Linear(cfg.dim, cfg.mlp_dim)
        self.fc2 = nn.Linear(cfg.mlp_dim, cfg.dim)
        self.mlp_drop = nn.Dropout(cfg.dropout)
        self.modulation = nn.Linear(cfg.dim, 6 * cfg.dim)

    def forward(self, x, cond, input_pos=None, mask=None):
        shift_a, scale_a, gate_a, shift_m, scale_m, gate_m = self.modulation(F.silu(cond)).chunk(6, dim=-1)
        x = x + gate_a * self.attn(modulate(self.norm1(x), shift_a, scale_a), input_pos, mask)
        h = self.mlp_drop(F.gelu(self.fc1(modulate(self.norm2(x), shift_m, scale_m))))
        return x + gate_m * self.mlp_drop(self.fc2(h))


class RAR(GeneratorIO, nn.Module):
    """[cls, class, tok_0 .. tok_{N-2}] (any token order in training) -> logits for tok_0 .. tok_{N-1}.

    Forward follows the GPT's call convention so `generate` drives both: input_pos counts 0 = class token and
    t = the input carrying token t-1; the leading cls token (sequence position 0) rides along with the class.
    """

    model_type = "rar"
    config_class = RARConfig

    def __init__(self, config: RARConfig):
        super().__init__()
        config.validate()
        self.config = config
        d, n = config.dim, config.num_tokens
        self.cls_token = nn.Parameter(torch.zeros(d))
        self.tok_emb = nn.Embedding(config.vocab_size, d)
        self.class_emb = nn.Embedding(config.num_classes + 1, d)  # last row: null class
        self.pos_embed = nn.Parameter(torch.zeros(n + config.pos_slack, d))
        self.target_pos_embed = nn.Parameter(torch.zeros(n + config.pos_slack, d))
        self.step_embed = nn.Parameter(torch.zeros(n + config.step_slack, d))
        self.blocks = nn.ModuleList(RARBlock(config) for _ in range(config.n_layer))
        self.final_norm = nn.LayerNorm(d, eps=config.norm_eps, elementwise_affine=False)
        self.final_modulation = nn.Linear(d, 2 * d)
        self.head = nn.Linear(d, config.vocab_size)
        self.register_buffer("causal_mask", None, persistent=False)
        self.register_buffer("cond_cache", None, persistent=False)  # class embedding of the rows being decoded
        self.class_names: list[str] | None = None
        self.tokenizer_info: dict[str, Any] | None = None
        self.source: Path | None = None
        self._init_weights()

    def _init_weights(self) -> None:
        std = self.config.init_std
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.trunc_normal_(m.weight, std=std)
                if getattr(m, "bias", None) is not None:
                    nn.init.zeros_(m.bias)
        for p in (self.pos_embed, self.target_pos_embed, self.step_embed):
            nn.init.trunc_normal_(p, std=std)
        for lin in [b.modulation for b in self.blocks] + [self.final_modulation]:  # adaLN-zero
            nn.init.zeros_(lin.weight)
            nn.init.zeros_(lin.bias)

    @property
    def null_class(self) -> int:
        return self.config.num_classes

    @staticmethod
    def guides(cfg_scale: float) -> bool:
        """The official rule (1d-tokenizer modeling/rar.py generate): guidance whenever guidance_scale != 0, so a
        scale below 1 is anti-guidance (its schedule runs from 1 to the scale) and only 0 runs one branch."""
        return cfg_scale != 0

    def decays(self, name: str, p: torch.Tensor) -> bool:
        """Whether AdamW decays this parameter: 1d-tokenizer's create_optimizer rule read on the official names
        (no decay for 1-D tensors and names holding 'embed', 'norm', 'bias' or 'ln'). So the embedding tables are not
        decayed, the final adaLN is not either ('adaln_before_head' holds 'ln'), and the cls token (1, 1, dim there)
        is; benchmarks/official_training.py compares the step."""
        if name == "cls_token":
            return True
        return p.dim() >= 2 and "emb" not in name and not name.startswith("final_modulation.")

    def setup_caches(self, max_batch: int, max_seq: int, dtype: torch.dtype | None = None) -> None:
        """KV caches for max_seq inputs (class + tokens) plus the cls token, rounded up to a multiple of 8."""
        seq = find_multiple(max_seq + 1, 8)
        dtype, device = dtype or self.head.weight.dtype, self.head.weight.device
        if install_caches([b.attn for b in self.blocks], max_batch, seq, self.config.n_head,
                          self.config.head_dim, dtype, device):
            self.causal_mask = torch.ones(seq, seq, dtype=torch.bool, device=device).tril()
            self.cond_cache = torch.zeros(max_batch, self.config.dim, dtype=dtype, device=device)

    def clear_caches(self) -> None:
        """Free the KV caches."""
        for b in self.blocks:
            b.attn.kv_cache = None
        self.causal_mask = self.cond_cache = None

    def position_rows(self, orders: torch.Tensor | None = None) -> torch.Tensor:
        """(B or 1, N + 2, dim): absolute + target-aware position embeddings of [cls, class, tokens in `orders`].

        Input i carries the position of token orders[i] and the target-aware position of orders[i + 1] (the class
        input that of orders[0]); cls and the last token carry no target position.
        """
        n = self.config.num_tokens
        if orders is None:
            own, target = self.pos_embed[None, 2: n + 2], self.target_pos_embed[None, 2: n + 2]
        else:
            own, target = self.pos_embed[2 + orders], self.target_pos_embed[2 + orders]
        b, zero = own.shape[0], own.new_zeros(own.shape[0], 1, own.shape[-1])
        return torch.cat([self.pos_embed[None, :2].expand(b, -1, -1), own], 1) + torch.cat([zero, target, zero], 1)

    def _raster_rows_at(self, pos: torch.Tensor) -> torch.Tensor:
        """position_rows(None)[0, pos] for sequence positions pos (T,) without building the whole table."""
        n = self.config.num_tokens
        has_target = ((pos >= 1) & (pos <= n)).unsqueeze(-1).to(self.pos_embed.dtype)
        return self.pos_embed[pos] + self.target_pos_embed[pos + 1] * has_target

    def forward(self, labels: torch.Tensor | None = None, idx: torch.Tensor | None = None,
                targets: torch.Tensor | None = None, input_pos: torch.Tensor | None = None, last_only: bool = False,
                orders: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits (B, T, vocab) fp32 (T = 1 with last_only) and the CE loss when targets are given.

        Full pass: labels (B,) [+ idx (B, T-1)]; orders (B, N) are the raster positions of the tokens in idx/targets
        (training permutes ids, targets and positions together; None = raster). Cached decoding as for the GPT.
        """
        parts, cond = [], None
        if labels is not None:
            if self.training and self.config.class_dropout_prob > 0:
                drop = torch.rand(labels.shape, device=labels.device) < self.config.class_dropout_prob
                labels = torch.where(drop, torch.full_like(labels, self.null_class), labels)
            cond = self.class_emb(labels)
            parts += [self.cls_token.to(cond.dtype).expand(cond.shape[0], 1, -1), cond[:, None]]
        if idx is not None:
            parts.append(self.tok_emb(idx))
        x = torch.cat(parts, dim=1)
        T = x.shape[1]
        if input_pos is None:
            require(cond is not None, "a full RAR pass needs labels")
            require(T <= self.config.num_tokens + 2, f"RAR got {T - 2} tokens, at most {self.config.num_tokens} fit")
            pos, mask = None, None
            x = x + self.position_rows(orders)[:, :T]
            steps = self.step_embed[:T]
        else:  # sequence positions: the cls token sits before the class input
            require(self.causal_mask is not None, "call setup_caches() before decoding with input_pos")
            pos = torch.cat([input_pos[:1], input_pos + 1]) if cond is not None else input_pos + 1
            if cond is not None:
                self.cond_cache[: cond.shape[0]] = cond
            else:
                cond = self.cond_cache[: x.shape[0]]
            x = x + self._raster_rows_at(pos)
            steps, mask = self.step_embed[pos], self.causal_mask[None, None, pos]
        c = cond[:, None] + steps  # (B, T, dim): the class plus a per-position step embedding
        for blk in self.blocks:
            x = blk(x, c, pos, mask)
        if labels is not None:  # the cls token predicts nothing
            x, c = x[:, 1:], c[:, 1:]
        if last_only:
            x, c = x[:, -1:], c[:, -1:]
        scale, shift = self.final_modulation(F.silu(c)).chunk(2, dim=-1)
        logits = self.head(modulate(self.final_norm(x), shift, scale)).float()
        loss = None if targets is None else F.cross_entropy(logits.flatten(0, 1), targets.flatten())
        return logits, loss


def create_rar(name: str, **overrides: Any) -> RAR:
    """Build a preset RAR, e.g. create_rar('RAR-B', vocab_size=4096, num_tokens=256)."""
    return RAR(rar_preset_config(name, **overrides))
