"""Conv stacks run channels-last on CPU (vfmtok.utils.layout): same numbers as NCHW, plain contiguous outputs."""

import torch

from vfmtok.tokenizer.discriminator import PatchGAN
from vfmtok.tokenizer.pixel_decoder import PixelDecoder
from vfmtok.tokenizer.vqgan import ConvEncoder
from vfmtok.utils.layout import cpu_channels_last


def test_cpu_channels_last_layout():
    x = torch.randn(2, 3, 4, 5)
    y = cpu_channels_last(x)
    assert torch.equal(x, y) and y.is_contiguous(memory_format=torch.channels_last) and not y.is_contiguous()


def test_conv_stacks_match_nchw_and_return_contiguous():
    torch.manual_seed(0)
    cases = [(PixelDecoder(16, 8, (1, 2), 1, True), torch.randn(2, 16, 4, 4), lambda m, x: m.out(m.up(m.mid(m.conv_in(x))))),
             (ConvEncoder(16, 8, (1, 2), 1), torch.randn(2, 3, 16, 16), lambda m, x: m.net(x)),
             (PatchGAN(8, 2), torch.randn(2, 3, 32, 32), lambda m, x: m.net(x))]
    for module, x, nchw in cases:
        with torch.no_grad():
            got, want = module(x), nchw(module, x)
        assert got.is_contiguous() and want.is_contiguous()
        assert torch.allclose(got, want, atol=1e-5), type(module).__name__


def test_silu_is_in_place_only_without_autograd():
    from vfmtok.tokenizer.pixel_decoder import SiLU

    x = torch.randn(4, 3)
    ref = torch.nn.functional.silu(x)
    y = x.clone().requires_grad_(True)
    out = SiLU()(y * 1.0)
    out.sum().backward()  # graph recorded: out of place, so the gradient is right
    assert torch.allclose(y.grad, torch.sigmoid(x) * (1 + x * (1 - torch.sigmoid(x))), atol=1e-6)
    with torch.no_grad():
        z = x.clone()
        assert SiLU()(z) is z and torch.allclose(z, ref)
