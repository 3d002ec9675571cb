"""Tokenizer, loss and training configs (dataclasses) and the preset registry."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Callable

from vfmtok.utils.config import check_ranges
from vfmtok.utils.errors import VFMTokError
from vfmtok.utils.registry import Registry


@dataclass
class TokenizerConfig:
    """Architecture of a tokenizer: VFMTok (frozen encoder + region queries) or the 2D-grid VQGAN baseline."""

    arch: str = "vfmtok"                  # "vfmtok" | "vqgan"
    image_size: int = 64
    # Frozen encoder (vfmtok only).
    encoder: str = "vgg16_imagenet"
    encoder_pretrained: bool = True
    encoder_weights: str | None = None    # local weight file for timm/transformers encoders
    encoder_seed: int = 0                 # seed of a random-initialised encoder (pretrained=False), so reloads match
    encoder_input_size: int | None = None  # resize images to this for the encoder (ViTs: 336); None = encoder default
    levels: tuple[int, ...] | None = None  # encoder levels to use (None = all; (-1,) = last only)
    # Region-adaptive token encoder.
    num_tokens: int = 64                  # a square: anchors on a sqrt(N) x sqrt(N) grid
    width: int = 256
    enc_depth: int = 2
    enc_heads: int = 8
    enc_points: int = 4
    enc_ffn: int = 1024
    query_causal: bool = True             # causal query self-attention, as in the official code
    # Quantiser.
    codebook_size: int = 4096
    code_dim: int = 12
    commit_beta: float = 0.25
    # Shared ViT decoder.
    dec_depth: int = 2
    dec_heads: int = 8
    dec_causal: bool = True
    dec_registers: int = 4
    dec_dropout: float = 0.0
    shared_mask_token: bool = False
    dec_anchor_init: bool = False         # mask tokens start from their anchor's token (not in the paper; docs/results/imagenette.md)
    feature_branch: bool = True           # dual reconstruction: also predict the encoder's features
    # How the position table is resized for the other grid: "size" (bicubic to the exact size) or "dino_offset"
    # (the official decoder's DINO trick: scale_factor=(g + 0.1) / table, which steps through the table at
    # table/(g + 0.1)); the two differ by up to 0.585 in decoded images from the same ids.
    dec_pos_interp: str = "size"
    # Norm of the feature pass's CLS and registers: "pixel" (the pixel pass's norm) or "feature" (the official
    # code's norm_post2, the norm of the feature mask tokens).
    dec_feature_norm: str = "pixel"
    # Conv pixel decoder (also the VQGAN baseline's decoder).
    pix_ch: int = 64
    pix_ch_mult: tuple[int, ...] = (1, 2, 2, 4)
    pix_res_blocks: int = 1
    pix_attn: bool = True
    # VQGAN baseline encoder (downsamples by 2**(len(mult)-1) to the token grid).
    vq_enc_ch: int = 64
    vq_enc_ch_mult: tuple[int, ...] = (1, 2, 2, 4)
    vq_enc_res_blocks: int = 1


@dataclass
class LossConfig:
    """Weights of every loss term; the adversarial terms start at `gan_start`."""

    pixel_loss: str = "l2"                # "l2" | "l1"
    pixel_weight: float = 1.0             # the official default is 2 x MSE (F.mse_loss added twice): 2.0
    lpips_weight: float = 1.0
    lpips_net: str = "vgg"
    feature_weight: float = 1.0           # 1 - cosine to the frozen encoder's target features
    codebook_weight: float = 1.0
    gan_weight: float = 0.5
    gan_start: int = 20000
    disc: str = "patchgan"                # "patchgan" | "vgg_features" (frozen VGG16 + heads) | "dino" (the paper's)
    disc_weights: str | None = None       # "dino": local dino_deitsmall16_pretrain.pth
    disc_pretrained: bool = True          # "dino": False = random frozen backbone (tests)
    disc_layers: int = 3
    disc_ch: int = 64


TRAINABLE = ("all", "decoder")


@dataclass
class TrainConfig:
    """Optimisation and bookkeeping of a tokenizer training run."""

    data: str = "sample"
    split: str = "train"
    steps: int = 1000
    batch_size: int = 16
    lr: float = 1e-4
    disc_lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.95)
    weight_decay: float = 0.05
    warmup_steps: int = 100
    lr_schedule: str = "constant"
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    ema_warmup: bool = True               # decay min(ema_decay, (1+step)/(10+step)); False: fixed (official update_ema)
    warmup_init_lr: float = 0.0           # the LR warm-up starts here (the official trainer: 1e-7)
    min_scale: float = 0.8                # random-crop scale range (ADM style)
    reseed_dead_every: int = 0            # re-seed unused codes every N steps (0 = off)
    cache_features: bool = False          # cache the frozen encoder's features on disk (exact: it is frozen)
    cache_views: int = 4                  # augmented views cached per image
    save_every: int = 500
    log_every: int = 10
    sample_every: int = 0                 # write a reconstruction grid every N steps (0 = only at the end)
    num_workers: int = 0
    accum_steps: int = 1                  # micro-batches of batch_size per optimiser step (global batch x this)
    compile: bool = False                 # torch.compile the tokenizer and its frozen encoder in place (keys unchanged)
    shuffle_buffer: int = 2000            # tar shards only: samples in the streaming shuffle buffer
    seed: int = 0
    precision: str = "bf16"               # used on GPU (fp16 adds a grad scaler); CPU always runs fp32
    device: str = "auto"
    init_from: str | None = None          # start from this checkpoint's weights (same model config): a new phase
    # "all" | "decoder": train only what follows the codebook lookup; codes stay bit-identical, so a generator
    # trained on them stays valid (decoder fine-tuning; dead-code re-seeding is then off)
    trainable: str = "all"

    def validate(self) -> None:
        """One-line errors for values no run can use (e.g. --set train.steps=-5)."""
        check_ranges(self, "train", positive=("steps", "batch_size", "lr", "disc_lr", "save_every", "log_every",
                                              "cache_views", "grad_clip", "min_scale"),
                     non_negative=("warmup_steps", "weight_decay", "reseed_dead_every", "sample_every", "num_workers",
                                   "seed"), fraction=("ema_decay",))
        if self.min_scale > 1:
            raise VFMTokError(f"train.min_scale must be in (0, 1], got {self.min_scale}")
        if self.lr_schedule not in ("constant", "cosine"):
            raise VFMTokError(f"train.lr_schedule must be constant or cosine, got '{self.lr_schedule}'")
        if self.precision not in ("fp32", "bf16", "fp16"):
            raise VFMTokError(f"train.precision must be fp32, bf16 or fp16, got '{self.precision}'")
        if self.trainable not in TRAINABLE:
            raise VFMTokError(f"train.trainable must be {' or '.join(TRAINABLE)}, got '{self.trainable}'")


@dataclass
class TokenizerRunConfig:
    """Everything `vfmtok train-tokenizer` needs."""

    model: TokenizerConfig = field(default_factory=TokenizerConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


def _paper() -> TokenizerRunConfig:
    # The paper's configuration (reference doc 1.x): DINOv2-L/14-reg at 336 px, 256 tokens, 16384 x 12, 6 + 6 layers at 512.
    m = TokenizerConfig(
        image_size=336, encoder="dinov2_vitl14_reg", encoder_input_size=336, num_tokens=256, width=512,
        enc_depth=6, enc_heads=8, enc_points=4, enc_ffn=1024, codebook_size=16384, code_dim=12,
        dec_depth=6, dec_heads=8, dec_dropout=0.1, pix_ch=128, pix_ch_mult=(1, 1, 2, 2, 4), pix_res_blocks=2,
        dec_pos_interp="dino_offset", dec_feature_norm="feature",
    )
    # Official defaults: 2 x MSE pixel loss, the frozen DINO ViT-S/16 discriminator (loss.disc_weights=<file>).
    # vqgan_train.py passes global_step = train_steps + 1 to the loss, so its GAN terms start at our step 19,999.
    loss = LossConfig(pixel_weight=2.0, gan_start=19_999, gan_weight=0.5, disc="dino")
    # vqgan_train.py: torch.optim.Adam (no weight decay; here AdamW at 0), warm-up from 1e-7 (timm's scheduler),
    # EMA at a fixed 0.9999 (benchmarks/official_training.py compares the step)
    train = TrainConfig(data="imagenet", batch_size=256, lr=1e-4, warmup_steps=4 * 5000, steps=250_000,
                        ema_decay=0.9999, ema_warmup=False, warmup_init_lr=1e-7, weight_decay=0.0, save_every=5000,
                        num_workers=8)
    return TokenizerRunConfig(m, loss, train)


def _cpu(image_size: int, num_tokens: int) -> TokenizerRunConfig:
    # Small enough to train for minutes on 2 CPU cores; real VGG16 ImageNet features as the frozen encoder.
    # The pixel decoder starts on the token grid: with 256 tokens on an 8 x 8 mask grid, anchor init averaged each
    # 2 x 2 of tokens and the val PSNR at 400 steps was lower (docs/results/bundled-model.md, "Why PSNR stays below 20 dB").
    side = int(num_tokens**0.5)
    mult = {2: (1, 2, 4), 3: (1, 2, 4, 4), 4: (1, 1, 2, 4, 4)}[(image_size // side).bit_length() - 1]
    # dec_anchor_init: with the paper's decoder the codebook collapsed to one code within 20 steps on Imagenette
    # batches (benchmarks/codebook_collapse.py); with re-seeding too, pixel MSE at step 160 was ~0.30 without it
    # and 0.19 with it (`vfmtok train-tokenizer --preset vfmtok-cpu-64 --steps 160 --set train.cache_views=2`).
    m = TokenizerConfig(image_size=image_size, encoder="vgg16_imagenet", num_tokens=num_tokens, width=192,
                        enc_depth=2, enc_heads=6, enc_ffn=512, codebook_size=1024, code_dim=12,
                        dec_depth=2, dec_heads=6, dec_anchor_init=True, pix_ch=32, pix_ch_mult=mult, pix_res_blocks=1)
    # AlexNet-LPIPS: at 64 px a VGG16-LPIPS step costs 1.8x as much on CPU (measured, 1 thread, batch 16).
    loss = LossConfig(gan_start=10**9, lpips_weight=1.0, lpips_net="alex")
    # Re-seeding dead codes every 20 steps: without it the codebook collapsed to 1-6 codes within ~100 steps
    # at lr 4e-4 and 1e-3 in our 64 px runs (docs/results/imagenette.md, Known problems).
    train = TrainConfig(batch_size=16, lr=4e-4, warmup_steps=50, steps=600, save_every=200, cache_features=True,
                        reseed_dead_every=20)
    return TokenizerRunConfig(m, loss, train)


def _vqgan_cpu(image_size: int, num_tokens: int) -> TokenizerRunConfig:
    cfg = _cpu(image_size, num_tokens)
    side = int(num_tokens**0.5)
    down = image_size // side
    n_down = down.bit_length() - 1
    cfg.model.arch = "vqgan"
    cfg.model.feature_branch = False
    cfg.model.dec_anchor_init = False  # no ViT decoder
    cfg.model.vq_enc_ch = 48
    cfg.model.vq_enc_ch_mult = (1, 2, 2, 4, 4)[: n_down + 1]
    cfg.train.cache_features = False
    return cfg


def _tiny() -> TokenizerRunConfig:
    # For tests: random-weight VGG16 is still 15M params, so tests pass encoder_pretrained as they need.
    m = TokenizerConfig(image_size=32, encoder="vgg16_imagenet", num_tokens=16, width=32, enc_depth=1, enc_heads=4,
                        enc_points=2, enc_ffn=64, codebook_size=64, code_dim=8, dec_depth=1, dec_heads=4,
                        pix_ch=32, pix_ch_mult=(1, 1, 2, 2), pix_res_blocks=1, vq_enc_ch=32, vq_enc_ch_mult=(1, 1, 2, 2))
    train = TrainConfig(batch_size=4, steps=4, warmup_steps=1, save_every=2, log_every=1, lr=1e-3)
    return TokenizerRunConfig(m, LossConfig(gan_start=10**9, lpips_weight=0.0), train)


PRESETS: Registry[Callable[[], TokenizerRunConfig]] = Registry("tokenizer preset", {
    "vfmtok-paper": _paper,
    "vfmtok-cpu-64": lambda: _cpu(64, 64),
    "vfmtok-cpu-64-t256": lambda: _cpu(64, 256),
    "vfmtok-cpu-128": lambda: _cpu(128, 64),
    "vqgan-cpu-64": lambda: _vqgan_cpu(64, 64),
    "vqgan-cpu-128": lambda: _vqgan_cpu(128, 64),
    "tiny": _tiny,
})


def get_preset(name: str) -> TokenizerRunConfig:
    """A fresh copy of a named preset."""
    return dataclasses.replace(PRESETS.pick(name)())
