"""Neighbourhood attention and Cyclic Neighbourhood Propagation (models/ops/cnp.py)."""
from __future__ import annotations

import pytest
import torch

from models.ops.cnp import (CyclicNeighbourhoodPropagation, _na_tiled, _natten_start_scalar, effective_kernel,
                            natten_window_starts, neighbourhood_attention, neighbourhood_attention_dense,
                            neighbourhood_attention_reference)



pytestmark = pytest.mark.usefixtures("one_thread")

def _qkv(b, nh, h, w, dh, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, nh, h, w, dh, generator=g, dtype=dtype) for _ in range(3)]


def test_window_starts_hand_computed():
    # length 7, k 3: centred windows, shifted at both borders
    assert natten_window_starts(7, 3, 1).tolist() == [0, 0, 1, 2, 3, 4, 4]
    # dilation 2: groups {0,2,4,6} and {1,3,5}; each window = 3 consecutive members of the query's own group
    assert natten_window_starts(7, 3, 2).tolist() == [0, 1, 0, 1, 2, 1, 2]
    # kernel covering the axis: every window starts at 0 (dilation 1) / at the group's first member
    assert natten_window_starts(5, 5, 1).tolist() == [0] * 5
    assert natten_window_starts(6, 3, 2).tolist() == [0, 1, 0, 1, 0, 1]


def test_window_starts_match_natten_formula():
    for length in range(1, 26):
        for k in (1, 3, 5, 7):
            for d in (1, 2, 3, 4):
                if k * d > length:
                    continue
                starts = natten_window_starts(length, k, d)
                assert starts.tolist() == [_natten_start_scalar(i, length, k, d) for i in range(length)]
                keys = starts[:, None] + d * torch.arange(k)
                assert keys.min() >= 0 and keys.max() < length  # shifted, never padded
                assert ((keys - torch.arange(length)[:, None]) % d == 0).all()  # same dilation group
                assert (keys == torch.arange(length)[:, None]).any(1).all()  # a query sees its own position


def _explicit_reference(q, k, v, ks, d):
    """Independent brute force: per position, list the window keys by scanning the whole map for the keys
    whose per-axis group rank lies in the clamped range (no start formula)."""
    B, nh, H, W, dh = q.shape
    out = torch.empty_like(q)

    def axis_keys(i, length):
        grp = list(range(i % d, length, d))
        m = grp.index(i)
        m0 = min(max(m - ks // 2, 0), len(grp) - ks)
        return grp[m0:m0 + ks]

    for i in range(H):
        for j in range(W):
            keys = torch.tensor([(r, c) for r in axis_keys(i, H) for c in axis_keys(j, W)])
            kk, vv = k[:, :, keys[:, 0], keys[:, 1]], v[:, :, keys[:, 0], keys[:, 1]]  # (B, nh, ks*ks, dh)
            a = ((kk * q[:, :, i, j, None]).sum(-1) * dh ** -0.5).softmax(-1)
            out[:, :, i, j] = (a[..., None] * vv).sum(2)
    return out


@pytest.mark.parametrize("h,w,ks,d", [(6, 6, 3, 1), (7, 9, 5, 1), (9, 8, 3, 2), (10, 13, 5, 2), (5, 11, 5, 1),
                                      (12, 9, 3, 3), (4, 4, 3, 1), (8, 8, 1, 4)])
def test_matches_bruteforce(h, w, ks, d):
    q, k, v = _qkv(2, 3, h, w, 4, seed=h * 31 + w)
    ref = _explicit_reference(q, k, v, ks, d)
    torch.testing.assert_close(neighbourhood_attention_reference(q, k, v, ks, d), ref, rtol=1e-12, atol=1e-12)
    for path in ("auto", "tiled", "gather", "dense"):
        torch.testing.assert_close(neighbourhood_attention(q, k, v, ks, d, path=path), ref, rtol=1e-12, atol=1e-12)


def test_relative_position_bias_matches_reference():
    q, k, v = _qkv(1, 2, 10, 11, 4, seed=3)
    for ks, d, table in [(3, 1, 3), (5, 2, 5), (3, 1, 5)]:  # (3, 1, 5): a clamped kernel uses the table centre
        rpb = torch.randn(2, 2 * table - 1, 2 * table - 1, dtype=torch.float64)
        ref = neighbourhood_attention_reference(q, k, v, ks, d, rpb=rpb)
        for path in ("tiled", "gather"):
            torch.testing.assert_close(neighbourhood_attention(q, k, v, ks, d, rpb=rpb, path=path), ref)
        torch.testing.assert_close(neighbourhood_attention_dense(q, k, v, ks, d, rpb=rpb), ref)


def test_kernel_covering_map_is_full_attention():
    q, k, v = _qkv(2, 2, 5, 5, 8, seed=1)
    full = torch.nn.functional.scaled_dot_product_attention(q.flatten(2, 3), k.flatten(2, 3), v.flatten(2, 3))
    for path in ("tiled", "gather", "dense"):
        torch.testing.assert_close(neighbourhood_attention(q, k, v, 5, path=path), full.view_as(q))


def test_float32_close_to_float64():
    q, k, v = _qkv(2, 4, 16, 16, 16, seed=2)
    ref = neighbourhood_attention(q, k, v, 5)
    for path in ("tiled", "gather", "dense"):
        out = neighbourhood_attention(*(t.float() for t in (q, k, v)), 5, path=path)
        assert ((out.double() - ref).abs().max() / ref.abs().max()).item() < 1e-5


def test_errors_are_clear():
    q, k, v = _qkv(1, 1, 6, 6, 4)
    with pytest.raises(ValueError, match="odd"):
        neighbourhood_attention(q, k, v, 4)
    with pytest.raises(ValueError, match=r"5\*2 exceeds the feature map 6x6"):
        neighbourhood_attention(q, k, v, 5, 2)
    with pytest.raises(ValueError, match="odd"):
        CyclicNeighbourhoodPropagation(16, 2, kernel_size=4)
    with pytest.raises(ValueError, match="path"):
        neighbourhood_attention(q, k, v, 3, path="cuda")
    with pytest.raises(ValueError, match="natten"):  # CPU tensors: never the natten path
        neighbourhood_attention(q, k, v, 3, path="natten")


def test_effective_kernel():
    assert effective_kernel(44, 44, 5, 1) == (5, 1)
    assert effective_kernel(4, 4, 5, 1) == (3, 1)
    assert effective_kernel(8, 16, 5, 2) == (3, 2)
    assert effective_kernel(1, 9, 5, 2) == (1, 1)


def _cnp_reference(m: CyclicNeighbourhoodPropagation, x, ks, d):
    """Explicit per-frame loop: frame t's queries attend to frame t-1 (or frame 0 itself / T-1) keys."""
    B, T, H, W, C = x.shape
    nh, dh = m.n_heads, m.head_dim
    outs = []
    for t in range(T):
        src = x[:, t - 1] if t > 0 else (x[:, T - 1] if m.cyclic else x[:, 0])
        q = m.q_proj(x[:, t]).view(B, H, W, nh, dh).permute(0, 3, 1, 2, 4)
        kv = m.kv_proj(src).view(B, H, W, 2, nh, dh).permute(3, 0, 4, 1, 2, 5)
        o = neighbourhood_attention_reference(q, kv[0], kv[1], ks, d, rpb=m.rpb)
        outs.append(m.out_proj(o.permute(0, 2, 3, 1, 4).reshape(B, H, W, C)))
    return torch.stack(outs, 1)


@pytest.mark.parametrize("cyclic", [True, False])
@pytest.mark.parametrize("hw,ks,d,bias,eff", [((6, 7), 3, 1, False, (3, 1)), ((8, 8), 3, 2, True, (3, 2)),
                                              ((4, 4), 5, 1, False, (3, 1)), ((4, 5), 5, 2, False, (1, 1))])
def test_cnp_matches_per_frame_reference(cyclic, hw, ks, d, bias, eff):
    torch.manual_seed(0)
    m = CyclicNeighbourhoodPropagation(16, n_heads=2, kernel_size=ks, dilation=d, cyclic=cyclic, bias=bias).double()
    x = torch.randn(2, 3, *hw, 16, dtype=torch.float64)
    torch.testing.assert_close(m(x), _cnp_reference(m, x, *eff))


def test_cyclic_frame0_sees_last_frame_only_when_cyclic():
    torch.manual_seed(0)
    x = torch.randn(1, 4, 6, 6, 16)
    x2 = x.clone()
    x2[:, -1] += torch.randn(6, 6, 16)
    for cyclic in (True, False):
        m = CyclicNeighbourhoodPropagation(16, n_heads=2, kernel_size=3, cyclic=cyclic)
        d = (m(x) - m(x2)).abs().amax(dim=(0, 2, 3, 4))  # per frame
        assert (d[0] > 1e-3) == cyclic  # frame 0 depends on frame T-1 only when cyclic
        assert d[1] == 0 and d[2] == 0  # frames 1, 2 see frames 0, 1
        assert d[3] > 1e-3  # frame T-1's own queries changed


def test_pad_mode_reproduces_lgrnet_padding():
    torch.manual_seed(0)
    m = CyclicNeighbourhoodPropagation(16, n_heads=2, kernel_size=5, small_maps="pad").double()
    x = torch.randn(1, 2, 4, 3, 16, dtype=torch.float64)
    out = m(x)
    xp = torch.nn.functional.pad(x, (0, 0, 0, 2, 0, 1))  # zero tokens up to 5 x 5, full kernel, crop
    torch.testing.assert_close(out, _cnp_reference(m, xp, 5, 1)[:, :, :4, :3])
    assert out.shape == x.shape


def test_gradients_reach_all_parameters():
    torch.manual_seed(0)
    m = CyclicNeighbourhoodPropagation(16, n_heads=4, kernel_size=3, dilation=2, bias=True, qkv_bias=True)
    x = torch.randn(2, 3, 8, 7, 16, requires_grad=True)
    m(x).square().sum().backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert x.grad.abs().sum() > 0


def test_module_shapes_and_levels_share_weights():
    m = CyclicNeighbourhoodPropagation(32, n_heads=4, kernel_size=5)
    for hw in [(16, 16), (8, 8), (4, 4), (5, 9)]:
        x = torch.randn(2, 3, *hw, 32)
        assert m(x).shape == x.shape
    assert m(torch.randn(1, 1, 6, 6, 32)).shape == (1, 1, 6, 6, 32)  # T = 1: attends to itself


def test_paths_gradients_agree():
    q, k, v = (t.requires_grad_() for t in _qkv(2, 2, 9, 10, 4, seed=5))
    rpb = torch.randn(2, 5, 5, dtype=torch.float64, requires_grad=True)
    w = torch.randn(2, 2, 9, 10, 4, dtype=torch.float64)
    grads = []
    for path in ("tiled", "gather", "dense"):
        out = neighbourhood_attention(q, k, v, 3, 2, rpb=rpb, path=path)
        grads.append(torch.autograd.grad((out * w).sum(), (q, k, v, rpb)))
    for g in grads[1:]:
        for a, b in zip(grads[0], g):
            torch.testing.assert_close(a, b)
    small = [t[:1, :1, :5, :6].detach().requires_grad_() for t in (q, k, v)]
    for path in ("tiled", "gather"):
        assert torch.autograd.gradcheck(lambda *t: neighbourhood_attention(*t, 3, 1, path=path), small)


def test_tiled_path_tile_sizes_and_dilation():
    # tiles straddle borders, partial last tiles, dilation groups of unequal length, tiles larger than a group
    for h, w, ks, d in [(13, 17, 5, 1), (10, 13, 5, 2), (12, 9, 3, 3), (7, 7, 7, 1), (22, 19, 3, 2)]:
        q, k, v = _qkv(1, 2, h, w, 4, seed=h + w)
        ref = neighbourhood_attention_reference(q, k, v, ks, d)
        for tile in (1, 2, 3, 4, 8, 32):
            torch.testing.assert_close(_na_tiled(q, k, v, ks, d, 0.5, None, tile=tile),
                                       neighbourhood_attention_reference(q, k, v, ks, d, scale=0.5))
        torch.testing.assert_close(neighbourhood_attention(q, k, v, ks, d), ref)


def test_module_on_larger_map():
    torch.manual_seed(0)
    m = CyclicNeighbourhoodPropagation(8, n_heads=2, kernel_size=3).double()
    x = torch.randn(1, 2, 17, 16, 8, dtype=torch.float64)
    torch.testing.assert_close(m(x), _cnp_reference(m, x, 3, 1))
