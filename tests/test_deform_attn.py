"""Deformable attention equals a naive per-point bilinear reference; gradients reach queries and offsets."""

import torch

from vfmtok.tokenizer.deform_attn import MSDeformAttn, _sampled, ms_deform_attn_sample


def bilinear_zero_pad(img: torch.Tensor, x: float, y: float) -> torch.Tensor:
    """img (D,h,w); (x,y) in [0,1] with pixel centres at (i+0.5)/size; zeros outside."""
    D, h, w = img.shape
    px, py = x * w - 0.5, y * h - 0.5
    x0, y0 = int(torch.floor(torch.tensor(px))), int(torch.floor(torch.tensor(py)))
    out = torch.zeros(D, dtype=img.dtype)
    for dy in (0, 1):
        for dx in (0, 1):
            xi, yi = x0 + dx, y0 + dy
            wx = 1 - abs(px - xi)
            wy = 1 - abs(py - yi)
            if 0 <= xi < w and 0 <= yi < h:
                out += wx * wy * img[:, yi, xi]
    return out


def naive(value, shapes, loc, weights):
    B, S, H, D = value.shape
    _, Q, _, L, P, _ = loc.shape
    out = torch.zeros(B, Q, H, D, dtype=value.dtype)
    starts = [0]
    for h, w in shapes:
        starts.append(starts[-1] + h * w)
    for b in range(B):
        for q in range(Q):
            for hd in range(H):
                for lv, (h, w) in enumerate(shapes):
                    img = value[b, starts[lv]:starts[lv + 1], hd].T.reshape(D, h, w)
                    for p in range(P):
                        x, y = loc[b, q, hd, lv, p].tolist()
                        out[b, q, hd] += weights[b, q, hd, lv, p] * bilinear_zero_pad(img, x, y)
    return out.reshape(B, Q, H * D)


def _random_case(shapes, seed=0):
    g = torch.Generator().manual_seed(seed)
    B, H, D, Q, P = 2, 2, 3, 5, 3
    L = len(shapes)
    S = sum(h * w for h, w in shapes)
    value = torch.randn(B, S, H, D, generator=g, dtype=torch.float64)
    loc = torch.rand(B, Q, H, L, P, 2, generator=g, dtype=torch.float64) * 1.4 - 0.2  # some points fall outside
    weights = torch.rand(B, Q, H, L, P, generator=g, dtype=torch.float64)
    return value, loc, weights


def test_matches_naive_reference_different_level_sizes():
    shapes = [(6, 5), (3, 3), (2, 4)]
    value, loc, weights = _random_case(shapes)
    fast = ms_deform_attn_sample(value, shapes, loc, weights)
    ref = naive(value, shapes, loc, weights)
    assert torch.allclose(fast, ref, atol=1e-10), (fast - ref).abs().max()


def test_matches_naive_reference_equal_level_sizes():
    shapes = [(4, 4)] * 3
    value, loc, weights = _random_case(shapes, seed=1)
    fast = ms_deform_attn_sample(value, shapes, loc, weights)
    ref = naive(value, shapes, loc, weights)
    assert torch.allclose(fast, ref, atol=1e-10), (fast - ref).abs().max()


def test_equal_size_fast_path_equals_loop_path():
    shapes = [(4, 4), (4, 4), (4, 4)]
    value, loc, _ = _random_case(shapes, seed=2)
    grids = 2.0 * loc - 1.0
    one_call = _sampled(value, shapes, grids, same_size=True)  # what ms_deform_attn_sample takes for these shapes
    per_level = _sampled(value, shapes, grids, same_size=False)  # the loop the unequal sizes take, forced
    assert one_call.shape == per_level.shape == (2, 2, 3, 3, 5, 3)
    assert torch.allclose(one_call, per_level, atol=1e-12)
    assert per_level.abs().sum() > 0 and not torch.allclose(per_level[:, :, 0], per_level[:, :, 1])  # levels differ


def test_init_offsets_and_uniform_weights():
    m = MSDeformAttn(dim=16, n_levels=2, n_heads=8, n_points=3)
    q = torch.randn(1, 4, 16)
    ref = torch.full((1, 4, 2, 2), 0.5)
    loc, w = m.sampling(q, ref, [(8, 8), (4, 4)])
    assert torch.allclose(w, torch.full_like(w, 1 / 6))
    # head 0 points along +x at 1, 2, 3 pixels of each level.
    dx = (loc[0, 0, 0, 0, :, 0] - 0.5) * 8
    assert torch.allclose(dx, torch.tensor([1.0, 2.0, 3.0]))


def test_query_has_no_effect_at_init_but_offsets_get_gradient():
    torch.manual_seed(0)
    m = MSDeformAttn(dim=16, n_levels=1, n_heads=4, n_points=2)
    q = torch.randn(1, 3, 16, requires_grad=True)
    v = torch.randn(1, 16, 16)
    m(q, torch.rand(1, 3, 1, 2), v, [(4, 4)]).sum().backward()
    assert q.grad.abs().max() == 0
    assert m.sampling_offsets.weight.grad.abs().sum() > 0


def test_gradients_reach_query_offsets_and_value():
    torch.manual_seed(0)
    m = MSDeformAttn(dim=16, n_levels=2, n_heads=4, n_points=2)
    # At init the offset/weight projections are zero, so queries only matter once they are trained.
    torch.nn.init.normal_(m.sampling_offsets.weight, std=0.1)
    torch.nn.init.normal_(m.attention_weights.weight, std=0.1)
    q = torch.randn(2, 3, 16, requires_grad=True)
    v = torch.randn(2, 16 + 4, 16, requires_grad=True)
    ref = torch.rand(1, 3, 2, 2)
    out = m(q, ref, v, [(4, 4), (2, 2)])
    out.square().sum().backward()
    for t in (q, v, m.sampling_offsets.weight, m.attention_weights.weight, m.value_proj.weight):
        assert t.grad is not None and t.grad.abs().sum() > 0
