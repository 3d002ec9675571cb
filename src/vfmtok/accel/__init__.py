"""Optional backend-specific speed-ups, each behind one call; the model code never imports this package.

`vfmtok.accel.cpu.accelerate(gpt)`: fp32 CPU sampling on compiled kernels (packed linears, blocked KV cache, fused
norms). On GPUs the tool is `torch.compile` (`generate(..., compile=True)`), which needs nothing from here.
"""
