"""Memory layout for convolution stacks on CPU."""

from __future__ import annotations

import torch


def cpu_channels_last(x: torch.Tensor) -> torch.Tensor:
    """x in channels-last layout if it lives on the CPU (unchanged elsewhere).

    oneDNN's CPU convolutions then skip a layout reorder on every call. Timed on this project's 2-core CPU:
    the VGG16 encoder 1.3-1.4x faster at 64-128 px, the pixel decoder 1.2-1.3x (forward and backward).
    """
    return x.contiguous(memory_format=torch.channels_last) if x.device.type == "cpu" else x
