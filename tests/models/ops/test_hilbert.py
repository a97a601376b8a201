"""Space-filling-curve orders (models/ops/hilbert.py).

What "step" means here: for consecutive cells of a walk, L1 = |dx| + |dy| (+ |dz|) and Chebyshev = max |d|.
A unit step has L1 = 1; a 2D diagonal step has L1 = 2 and Chebyshev 1; a jump has Chebyshev > 1.
Measured facts pinned below:
* 2D gilbert (default major axis = the longer side): every step is a unit step except exactly one diagonal when
  the longer side is odd, the shorter side even and the shorter side >= 4 (shorter side 2: no diagonal).
  Never a jump.
* LGRNet's grids (T, n_q), n_q in {10, 16, 20}, T in 1..40: with n_q forced major (``major_axis=-1``,
  LGRNet's ``gilbert2d_widthBigger``) all unit steps, as REFERENCE.md says. With the default (longer side major)
  the grids with T > n_q and T odd get one diagonal step.
* 3D: all-even sizes give unit steps only; odd sizes give a few non-unit steps (L1 up to 4 seen, e.g. (4,5,5));
  (w, h, d) = (7, 6, 4): 3, (16, 16, 5): 16 (8 of them skip a cell, Chebyshev 2), as REFERENCE.md reports.
"""
from __future__ import annotations

import itertools
import math

import pytest
import torch

from models.ops.hilbert import curve_order, gilbert2d, gilbert3d, inverse_order, step_lengths, unravel


pytestmark = pytest.mark.usefixtures("one_thread")

SHAPES_2D = [(1, 1), (1, 7), (7, 1), (2, 2), (3, 5), (7, 6), (20, 11), (20, 6), (16, 16), (64, 64), (6, 7)]
SHAPES_3D = [(2, 2, 2), (7, 6, 4), (16, 16, 5), (3, 5, 7), (4, 8, 8), (1, 1, 5), (1, 4, 1), (2, 3, 1)]


def _steps(shape, **kw):
    perm = curve_order(shape, **kw)
    c = unravel(perm, shape)
    return step_lengths(c, "l1"), step_lengths(c, "chebyshev")


def _is_perm(perm, n):
    return perm.dtype == torch.long and perm.shape == (n,) and torch.equal(perm.sort().values, torch.arange(n))


@pytest.mark.parametrize("kind", ["hilbert", "zigzag", "raster"])
@pytest.mark.parametrize("shape", SHAPES_2D + SHAPES_3D + [(9,), (1,)])
def test_every_order_is_a_permutation(shape, kind):
    n = torch.Size(shape).numel()
    perm = curve_order(shape, kind)
    assert _is_perm(perm, n)
    inv = inverse_order(perm)
    assert torch.equal(perm[inv], torch.arange(n)) and torch.equal(inv[perm], torch.arange(n))
    x = torch.randn(2, *shape)
    seq = x.flatten(1)[:, perm]
    assert torch.equal(seq[:, inv].view_as(x), x)


def test_gilbert_coords_cover_grid_and_start_at_origin():
    for w, h in [(1, 1), (5, 3), (3, 5), (8, 8), (13, 4)]:
        c = gilbert2d(w, h)
        assert c[0] == (0, 0) and sorted(c) == sorted(itertools.product(range(w), range(h)))
    for w, h, d in [(2, 2, 2), (7, 6, 4), (3, 5, 7), (5, 1, 3)]:
        c = gilbert3d(w, h, d)
        assert c[0] == (0, 0, 0) and sorted(c) == sorted(itertools.product(range(w), range(h), range(d)))
        assert c[-1] == {0: (w - 1, 0, 0), 1: (0, h - 1, 0), 2: (0, 0, d - 1)}[[w, h, d].index(max(w, h, d))]


def _d2xy(n: int, d: int) -> tuple[int, int]:
    """Classical Hilbert curve index -> (x, y) on an n x n grid (n a power of 2), the textbook rotate-and-flip
    construction: starts at (0, 0), ends at (n - 1, 0)."""
    x = y = 0
    s, t = 1, d
    while s < n:
        rx = 1 & (t // 2)
        ry = 1 & (t ^ rx)
        if ry == 0:
            if rx == 1:
                x, y = s - 1 - x, s - 1 - y
            x, y = y, x
        x, y = x + s * rx, y + s * ry
        t //= 4
        s *= 2
    return x, y


@pytest.mark.parametrize("n", [2, 4, 8, 16, 32, 64])
def test_2d_powers_of_two_equal_classical_hilbert(n):
    assert gilbert2d(n, n) == [_d2xy(n, d) for d in range(n * n)]
    l1, _ = _steps((n, n))
    assert (l1 == 1).all()


def _dyadic_blocks_contiguous(coords: torch.Tensor, n: int) -> bool:
    """Hilbert locality: every aligned 2^j block (square / cube) is visited in one consecutive run."""
    size = 2
    while size < n:
        block = (coords // size) * torch.tensor([(n // size) ** i for i in range(coords.shape[1])])
        block = block.sum(1)
        runs = (block[1:] != block[:-1]).sum().item() + 1
        if runs != (n // size) ** coords.shape[1]:
            return False
        size *= 2
    return True


@pytest.mark.parametrize("n", [2, 4, 8, 16])
def test_3d_power_of_two_cubes_are_hilbert(n):
    c = torch.tensor(gilbert3d(n, n, n))
    assert (step_lengths(c) == 1).all()
    assert c[0].tolist() == [0, 0, 0] and c[-1].tolist() == [n - 1, 0, 0]
    assert _dyadic_blocks_contiguous(c, n)
    assert _dyadic_blocks_contiguous(torch.tensor(gilbert2d(n, n)), n)


def test_locality_beats_raster_on_non_powers():
    # every 9 consecutive cells of the sequence fit in a small box on the grid: mean of the box's longest side
    for shape in [(20, 11), (7, 6), (16, 16, 5), (11, 20)]:
        def spread(kind):
            c = unravel(curve_order(shape, kind), shape)
            win = c.unfold(0, 9, 1)  # (N - 8, ndim, 9)
            return (win.amax(-1) - win.amin(-1)).amax(-1).float().mean().item()
        assert spread("hilbert") < 0.75 * spread("raster"), shape


def test_2d_diagonal_steps_characterized():
    for h, w in itertools.product(range(1, 25), repeat=2):
        l1, cheb = _steps((h, w))
        longer, shorter = max(h, w), min(h, w)
        expect_diag = longer % 2 == 1 and shorter % 2 == 0 and shorter >= 4
        assert int((l1 > 1).sum()) == int(expect_diag), (h, w)
        assert (cheb <= 1).all(), (h, w)  # never a jump in 2D


@pytest.mark.parametrize("n_q", [10, 16, 20])
def test_lgrnet_grids(n_q):
    for t in range(1, 41):
        l1, _ = _steps((t, n_q), major_axis=-1)  # LGRNet: n_q (width) forced major
        assert (l1 == 1).all(), (t, n_q)
        l1, _ = _steps((t, n_q))  # default: longer side major -> a diagonal when T is odd and longer than n_q
        assert int((l1 > 1).sum()) == int(t > n_q and t % 2 == 1), (t, n_q)


def test_3d_even_sizes_unit_steps():
    for w, h, d in itertools.product([2, 4, 6, 8, 10], repeat=3):
        l1 = step_lengths(gilbert3d(w, h, d))
        assert (l1 == 1).all(), (w, h, d)
    for shape in [(4, 8, 8), (2, 2, 2), (6, 10, 4)]:
        assert (_steps(shape)[0] == 1).all()


def test_3d_odd_sizes_measured():
    measured = {(7, 6, 4): (3, 0), (16, 16, 5): (16, 8), (3, 5, 7): (6, 0)}  # (w, h, d): (L1 > 1, Chebyshev > 1)
    for whd, (n_nonunit, n_jump) in measured.items():
        c = gilbert3d(*whd)
        assert int((step_lengths(c) > 1).sum()) == n_nonunit
        assert int((step_lengths(c, "chebyshev") > 1).sum()) == n_jump


@pytest.mark.parametrize("shape", SHAPES_2D + SHAPES_3D)
def test_zigzag_unit_steps(shape):
    l1, _ = _steps(shape, kind="zigzag")
    assert (l1 == 1).all()


def test_raster_is_identity_and_major_axis_forcing():
    assert torch.equal(curve_order((3, 4), "raster"), torch.arange(12))
    c = unravel(curve_order((12, 5), major_axis=-1), (12, 5))
    assert c[-1].tolist() == [0, 4]  # x (last axis) major: ends at the far end of x
    c = unravel(curve_order((12, 5)), (12, 5))
    assert c[-1].tolist() == [11, 0]  # default: the longer axis (y) is major
    with pytest.raises(ValueError, match="kind"):
        curve_order((3, 4), "peano")
    with pytest.raises(ValueError, match="shape"):
        curve_order((0, 4))


def test_cache_is_safe_against_mutation():
    a = curve_order((11, 20))
    b = curve_order((11, 20))
    assert torch.equal(a, b) and a.data_ptr() != b.data_ptr()
    a.zero_()
    assert torch.equal(curve_order((11, 20)), b)
    coords = gilbert2d(5, 3)
    coords.clear()
    assert len(gilbert2d(5, 3)) == 15


@pytest.mark.parametrize("shape, axis", [((3, 4, 1), -1), ((1, 4, 3), -3), ((4, 1, 3), -2), ((1, 1, 3), -3),
                                         ((5, 1), -1), ((1, 5), -2)])
def test_a_major_axis_of_length_one_gives_the_curve_of_the_other_sides(shape, axis):
    order = curve_order(shape, major_axis=axis)  # (3, 4, 1) with x major once recursed without end
    assert sorted(order.tolist()) == list(range(math.prod(shape)))
    flat = tuple(s for i, s in enumerate(shape) if i != axis % len(shape))
    if len(flat) == 2:  # a flat 3D box walks exactly like its 2D grid (unit steps included)
        assert torch.equal(order, curve_order(flat))
