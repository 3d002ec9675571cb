"""vfmtok.utils.linear: the oneDNN path agrees with F.linear forward and backward, and is taken only where it applies."""

import pytest
import torch
import torch.nn.functional as F

import vfmtok.utils.linear as lin

pytestmark = pytest.mark.skipif(not lin.onednn_available(), reason="torch built without oneDNN")


@pytest.mark.parametrize("shape", [(5, 16), (3, 4, 16), (2, 1, 16)])
@pytest.mark.parametrize("bias", [True, False])
def test_no_grad_path_matches_f_linear(shape, bias, monkeypatch):
    torch.manual_seed(0)
    monkeypatch.setattr(lin, "MIN_MACS", 0)  # tiny test shapes take the fast path too
    m = lin.Linear(16, 24, bias=bias)
    x = torch.randn(shape)
    with torch.no_grad():
        y = m(x)
    assert y.shape == (*shape[:-1], 24)
    assert torch.allclose(y, F.linear(x, m.weight, m.bias), atol=1e-5)
    xt = torch.randn(shape[-1], *shape[:-1]).movedim(0, -1)  # a non-contiguous input
    with torch.no_grad():
        assert torch.allclose(m(xt), F.linear(xt, m.weight, m.bias), atol=1e-5)


@pytest.mark.parametrize("bias", [True, False])
def test_backward_matches_f_linear(bias, monkeypatch):
    monkeypatch.setattr(lin, "MIN_MACS", 0)
    torch.manual_seed(0)
    m = lin.Linear(16, 24, bias=bias)
    x = torch.randn(3, 5, 16, requires_grad=True)
    g = torch.randn(3, 5, 24)
    (m(x) * g).sum().backward()
    grads = [x.grad, m.weight.grad] + ([m.bias.grad] if bias else [])
    x2, w2 = x.detach().clone().requires_grad_(), m.weight.detach().clone().requires_grad_()
    b2 = m.bias.detach().clone().requires_grad_() if bias else None
    (F.linear(x2, w2, b2) * g).sum().backward()
    for got, want in zip(grads, [x2.grad, w2.grad] + ([b2.grad] if bias else [])):
        assert torch.allclose(got, want, atol=1e-5)
    w3 = m.weight.detach().clone().requires_grad_()  # frozen input: only the weight gradient is formed
    (lin.linear(x.detach(), w3) * g).sum().backward()
    assert torch.allclose(w3.grad, w2.grad, atol=1e-5)


def test_paths_taken(monkeypatch):
    calls = []
    real = lin._onednn_linear

    def spy(*args):
        calls.append(1)
        return real(*args)

    monkeypatch.setattr(lin, "_onednn_linear", spy)
    monkeypatch.setattr(lin, "USE_ONEDNN", True)  # whatever VFMTOK_ONEDNN says
    monkeypatch.setattr(lin, "MIN_MACS", 0)
    m = lin.Linear(8, 4)
    x = torch.randn(3, 8, requires_grad=True)
    m(x).sum().backward()  # forward + two backward products
    assert len(calls) == 3
    with torch.no_grad():
        m(x)
        m.double()(x.double())  # fp64 is not a oneDNN case
        with torch.autocast("cpu", dtype=torch.bfloat16):
            m.float()(x)  # autocast decides the dtype: F.linear
        with lin.onednn_enabled(False):
            m(x)
        assert lin.USE_ONEDNN  # restored after the block
    assert len(calls) == 4


def test_small_products_stay_on_torch_blas(monkeypatch):
    calls = []
    monkeypatch.setattr(lin, "_onednn_linear", lambda *a: calls.append(1))
    with torch.no_grad():
        lin.Linear(64, 64)(torch.randn(4, 64))  # 16k multiply-adds: the per-call overhead would dominate
    assert not calls


def test_use_onednn_linears_swaps_plain_linears_in_place():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU(), torch.nn.Sequential(torch.nn.Linear(8, 3)))
    x = torch.randn(2, 8)
    ref, keys = net(x), list(net.state_dict())
    lin.use_onednn_linears(net)
    assert type(net[0]) is lin.Linear and type(net[2][0]) is lin.Linear
    assert list(net.state_dict()) == keys and torch.allclose(net(x), ref, atol=1e-6)
