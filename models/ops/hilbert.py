"""Space-filling-curve orders over small 2D / 3D grids (LGRNet's Hilbert selective scan).

LGRNet scans its (T, n_q) grid of frame queries (T frames x n_q queries, flat index ``t * n_q + q``) in a
generalized Hilbert ("gilbert") order so that neighbours on the sequence are neighbours on the grid. The gilbert
algorithm generalizes the Hilbert curve to arbitrary (not power-of-two) rectangles and boxes. It is written here
from its description (REFERENCE.md 4.2) because it is not published on PyPI as a maintained package; the grids are
tiny (a few hundred cells), so plain recursive Python, cached per shape, is plenty.

Conventions
-----------
* ``gilbert2d(width, height)`` returns (x, y) coordinates, x in [0, width), y in [0, height), in visit order.
* ``gilbert3d(width, height, depth)`` returns (x, y, z) likewise.
* ``curve_order(shape)`` takes the grid in C order, ``(H, W)`` or ``(D, H, W)`` (x is the last axis), and returns
  the permutation ``perm`` with ``perm[k]`` = flat C-order index of the k-th visited cell, so
  ``seq = x.flatten(-len(shape))[..., perm]`` is the curve-ordered sequence and ``inverse_order(perm)`` undoes it.

The recursion keeps one invariant: a call on the box spanned by the major vector ``a`` (length w) and the minor
vectors ``b`` (h) [and ``c`` (d)] starting at corner ``p`` visits every cell of the box once, starting at ``p``
and ending at ``p + a - sign(a)``, i.e. the far cell along the major axis. Splits are chosen so the end of one
part is a grid neighbour of the start of the next. The invariant can only fail in the degenerate base case of a
one-cell-wide strip whose strip direction is a minor axis, which happens for some odd sizes: the walk then
ends away from the promised corner and the next part starts with a non-unit step (a diagonal in 2D, possibly a
longer jump in 3D). Halving "prefers even halves" (an odd half is extended by one cell) to keep sub-boxes even,
which makes every step a unit step whenever the sizes allow it (see tests/models/ops/test_hilbert.py for what
is measured).
"""
from __future__ import annotations

import functools
import math
from typing import Sequence

import torch

__all__ = ["curve_order", "inverse_order", "gilbert2d", "gilbert3d", "step_lengths", "unravel", "KINDS"]

KINDS = ("hilbert", "zigzag", "raster")

Vec2 = tuple[int, int]
Vec3 = tuple[int, int, int]


def _sign(v: int) -> int:
    return (v > 0) - (v < 0)


# ----------------------------------------------------------------------------------------------------------- 2D
def _walk2d(out: list, px: int, py: int, ax: int, ay: int, bx: int, by: int) -> None:
    """Append the cells of the box (corner p, major a, minor b; a and b axis-aligned, orthogonal) to ``out``."""
    w, h = abs(ax + ay), abs(bx + by)
    dax, day = _sign(ax), _sign(ay)  # unit step along the major axis
    dbx, dby = _sign(bx), _sign(by)  # unit step along the minor axis
    if h == 1:  # a strip along the major axis: ends where promised
        out.extend((px + i * dax, py + i * day) for i in range(w))
        return
    if w == 1:  # a strip along the minor axis: ends at p + b - db, not at p (source of the odd-size diagonal)
        out.extend((px + i * dbx, py + i * dby) for i in range(h))
        return
    ax2, ay2, bx2, by2 = ax // 2, ay // 2, bx // 2, by // 2
    if 2 * w > 3 * h:  # long box: two halves along the major axis
        if abs(ax2 + ay2) % 2 and w > 2:  # prefer an even first half
            ax2, ay2 = ax2 + dax, ay2 + day
        _walk2d(out, px, py, ax2, ay2, bx, by)
        _walk2d(out, px + ax2, py + ay2, ax - ax2, ay - ay2, bx, by)
        return
    if abs(bx2 + by2) % 2 and h > 2:  # prefer an even lower part
        bx2, by2 = bx2 + dbx, by2 + dby
    # three parts: up the left half of the lower part, across the whole upper part, down the right lower half
    _walk2d(out, px, py, bx2, by2, ax2, ay2)
    _walk2d(out, px + bx2, py + by2, ax, ay, bx - bx2, by - by2)
    _walk2d(out, px + (ax - dax) + (bx2 - dbx), py + (ay - day) + (by2 - dby), -bx2, -by2, -(ax - ax2), -(ay - ay2))


@functools.lru_cache(maxsize=256)
def _gilbert2d(width: int, height: int, major: str) -> tuple[Vec2, ...]:
    out: list[Vec2] = []
    if width <= 0 or height <= 0:
        return ()
    if major == "x":
        _walk2d(out, 0, 0, width, 0, 0, height)
    else:
        _walk2d(out, 0, 0, 0, height, width, 0)
    return tuple(out)


def gilbert2d(width: int, height: int, major: str | None = None) -> list[tuple[int, int]]:
    """Generalized Hilbert curve over a ``width`` x ``height`` grid: (x, y) cells in visit order, from (0, 0).

    ``major``: "x" or "y" forces the major (first-split) axis; default: the longer side, ties -> x. The curve ends
    at the far corner of the major axis ((width - 1, 0) for an x-major curve). LGRNet's ``gilbert2d_widthBigger``
    is ``major="x"`` with width = n_q."""
    if major is None:
        major = "x" if width >= height else "y"
    if major not in ("x", "y"):
        raise ValueError(f"gilbert2d: major must be 'x', 'y' or None, got {major!r}")
    return list(_gilbert2d(int(width), int(height), major))


# ----------------------------------------------------------------------------------------------------------- 3D
def _add(p: Vec3, *vs: Vec3) -> Vec3:
    return (p[0] + sum(v[0] for v in vs), p[1] + sum(v[1] for v in vs), p[2] + sum(v[2] for v in vs))


def _neg(v: Vec3) -> Vec3:
    return (-v[0], -v[1], -v[2])


def _sub(u: Vec3, v: Vec3) -> Vec3:
    return (u[0] - v[0], u[1] - v[1], u[2] - v[2])


def _unit(v: Vec3) -> Vec3:
    return (_sign(v[0]), _sign(v[1]), _sign(v[2]))


def _len(v: Vec3) -> int:
    return abs(v[0] + v[1] + v[2])


def _half(v: Vec3) -> Vec3:
    """Floor-halved vector, extended by one step when the half is odd and the side longer than 2."""
    h = (v[0] // 2, v[1] // 2, v[2] // 2)
    if _len(h) % 2 and _len(v) > 2:
        h = _add(h, _unit(v))
    return h


def _line3d(out: list, p: Vec3, v: Vec3) -> None:
    d = _unit(v)
    out.extend((p[0] + i * d[0], p[1] + i * d[1], p[2] + i * d[2]) for i in range(_len(v)))


def _walk3d(out: list, p: Vec3, a: Vec3, b: Vec3, c: Vec3) -> None:
    """Append the cells of the box (corner p, major a, minors b, c) to ``out``; ends at p + a - unit(a)."""
    w, h, d = _len(a), _len(b), _len(c)
    if h == 1 and d == 1:
        return _line3d(out, p, a)
    if w == 1 and d == 1:
        return _line3d(out, p, b)
    if w == 1 and h == 1:
        return _line3d(out, p, c)
    da, db, dc = _unit(a), _unit(b), _unit(c)
    a2, b2, c2 = _half(a), _half(b), _half(c)
    a_rest, b_rest, c_rest = _sub(a, a2), _sub(b, b2), _sub(c, c2)
    a_end = _sub(a, da)  # offset of the far cell along a
    if 2 * w > 3 * h and 2 * w > 3 * d:  # long along a: two halves along a
        _walk3d(out, p, a2, b, c)
        _walk3d(out, _add(p, a2), a_rest, b, c)
    elif 3 * h > 4 * d:  # flat in c: the 2D three-part split in the (a, b) plane, c kept whole
        _walk3d(out, p, b2, c, a2)
        _walk3d(out, _add(p, b2), a, b_rest, c)
        _walk3d(out, _add(p, a_end, _sub(b2, db)), _neg(b2), c, _neg(a_rest))
    elif 3 * d > 4 * h:  # flat in b: the three-part split in the (a, c) plane, b kept whole
        _walk3d(out, p, c2, a2, b)
        _walk3d(out, _add(p, c2), a, b, c_rest)
        _walk3d(out, _add(p, a_end, _sub(c2, dc)), _neg(c2), _neg(a_rest), b)
    else:  # cube-like: five parts covering the 8 octants (A0/A1 x B0/B1 x C0/C1)
        _walk3d(out, p, b2, c2, a2)                                                   # A0 B0 C0
        _walk3d(out, _add(p, b2), c, a2, b_rest)                                      # A0 B1 C*
        _walk3d(out, _add(p, _sub(b2, db), _sub(c, dc)), a, _neg(b2), _neg(c_rest))   # A* B0 C1
        _walk3d(out, _add(p, a_end, b2, _sub(c, dc)), _neg(c), _neg(a_rest), b_rest)  # A1 B1 C*
        _walk3d(out, _add(p, a_end, _sub(b2, db)), _neg(b2), c2, _neg(a_rest))        # A1 B0 C0


@functools.lru_cache(maxsize=256)
def _gilbert3d(width: int, height: int, depth: int, major: str) -> tuple[Vec3, ...]:
    out: list[Vec3] = []
    if min(width, height, depth) <= 0:
        return ()
    sizes = {"x": width, "y": height, "z": depth}
    if sizes[major] == 1:  # a flat box (a forced major axis of length 1): the 2D curve over the other two sides
        u, v = (a for a in "xyz" if a != major)
        cells = _gilbert2d(sizes[u], sizes[v], "x" if sizes[u] >= sizes[v] else "y")
        return tuple((c.get("x", 0), c.get("y", 0), c.get("z", 0)) for c in ({u: i, v: j} for i, j in cells))
    x, y, z = (width, 0, 0), (0, height, 0), (0, 0, depth)
    if major == "x":
        _walk3d(out, (0, 0, 0), x, y, z)
    elif major == "y":
        _walk3d(out, (0, 0, 0), y, x, z)
    else:
        _walk3d(out, (0, 0, 0), z, x, y)
    return tuple(out)


def gilbert3d(width: int, height: int, depth: int, major: str | None = None) -> list[tuple[int, int, int]]:
    """Generalized 3D Hilbert curve over a ``width`` x ``height`` x ``depth`` box: (x, y, z) cells in visit order,
    starting at (0, 0, 0) and (when no jump occurs) ending at the far corner of the major axis.

    ``major``: "x", "y" or "z" forces the major axis; default: the longest side, ties -> x, then y.
    Every size gives a permutation of the cells; all-even sizes give unit steps only, odd sizes may cause a few
    jumps (measured in the tests)."""
    if major is None:
        major = "x" if width >= height and width >= depth else ("y" if height >= depth else "z")
    if major not in ("x", "y", "z"):
        raise ValueError(f"gilbert3d: major must be 'x', 'y', 'z' or None, got {major!r}")
    return list(_gilbert3d(int(width), int(height), int(depth), major))


# -------------------------------------------------------------------------------------------------- orders
def _zigzag(shape: tuple[int, ...]) -> torch.Tensor:
    """Boustrophedon over the last axis: odd rows reversed; in 3D every odd plane is the previous plane's walk
    reversed, so the last cell of a plane sits right below the first cell of the next one."""
    idx = torch.arange(math.prod(shape)).view(shape)
    if len(shape) == 1:
        return idx
    plane = idx[0] if len(shape) == 3 else idx
    snake = plane.clone()
    snake[1::2] = plane[1::2].flip(-1)
    snake = snake.flatten()
    if len(shape) == 2:
        return snake
    n_plane = shape[1] * shape[2]
    rows = [snake + z * n_plane if z % 2 == 0 else snake.flip(0) + z * n_plane for z in range(shape[0])]
    return torch.cat(rows)


@functools.lru_cache(maxsize=256)
def _curve_order(shape: tuple[int, ...], kind: str, major_axis: int | None) -> torch.Tensor:
    n = math.prod(shape)
    if kind == "raster" or n <= 1 or len(shape) == 1:
        return torch.arange(n)
    if kind == "zigzag":
        return _zigzag(shape)
    names = "xy" if len(shape) == 2 else "xyz"  # axis -1 is x, -2 is y, -3 is z
    major = None if major_axis is None else names[-1 - (major_axis % len(shape))]
    if len(shape) == 2:
        h, w = shape
        return torch.tensor([y * w + x for x, y in gilbert2d(w, h, major)], dtype=torch.long)
    d, h, w = shape
    return torch.tensor([(z * h + y) * w + x for x, y, z in gilbert3d(w, h, d, major)], dtype=torch.long)


def curve_order(shape: Sequence[int], kind: str = "hilbert", major_axis: int | None = None) -> torch.Tensor:
    """Visit order of a grid as a permutation of its flat C-order indices.

    shape: grid dims in C order: (H, W) in 2D, (D, H, W) in 3D, (L,) in 1D (always the identity). For LGRNet's
    query grid use (T, n_q): flat index t * n_q + q.
    kind: "hilbert" (gilbert; the longest axis is major, ties -> the later axis), "zigzag" (boustrophedon over
    the last axis, alternate direction each row / plane: unit steps everywhere), "raster" (identity).
    major_axis: force the major axis of the Hilbert curve (an index into ``shape``, negative allowed; -1 = the
    last axis, as LGRNet's ``gilbert2d_widthBigger``, which always puts n_q major). Ignored by the other kinds.
    Returns a LongTensor (prod(shape),): perm[k] = flat index of the k-th cell on the curve. Orders are computed
    once per (shape, kind, major_axis); each call returns a fresh clone, so callers may modify it freely."""
    shape = tuple(int(s) for s in shape)
    if not 1 <= len(shape) <= 3 or min(shape, default=0) < 1:
        raise ValueError(f"curve_order: shape must have 1-3 positive dims, got {shape}")
    if kind not in KINDS:
        raise ValueError(f"curve_order: kind must be one of {KINDS}, got {kind!r}")
    if major_axis is not None and not -len(shape) <= major_axis < len(shape):
        raise ValueError(f"curve_order: major_axis {major_axis} out of range for shape {shape}")
    return _curve_order(shape, kind, major_axis).clone()


def inverse_order(perm: torch.Tensor | Sequence[int]) -> torch.Tensor:
    """inv with inv[perm[k]] = k (LongTensor, same length): ``seq[..., inv]`` restores C order."""
    perm = torch.as_tensor(perm, dtype=torch.long)
    inv = torch.empty_like(perm)
    inv[perm] = torch.arange(perm.numel(), device=perm.device)
    return inv


def unravel(perm: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """Flat C-order indices (N,) -> coordinates (N, len(shape)) in the same axis order as ``shape``."""
    perm = torch.as_tensor(perm, dtype=torch.long)
    cols = []
    for s in reversed(tuple(shape)):
        cols.append(perm % s)
        perm = perm // s
    return torch.stack(cols[::-1], dim=-1)


def step_lengths(coords: torch.Tensor | Sequence[Sequence[int]], norm: str = "l1") -> torch.Tensor:
    """Sizes of the N - 1 steps between consecutive cells of a walk given as coordinates (N, ndim).

    norm: "l1" (|dx| + |dy| [+ |dz|]: 1 for a unit step, 2 for a 2D diagonal) or "chebyshev" (max |d|: 1 for a
    unit or diagonal step, > 1 for a jump). Returns a LongTensor (N - 1,)."""
    c = torch.as_tensor(coords, dtype=torch.long)
    if c.dim() == 1:
        c = c[:, None]
    diff = (c[1:] - c[:-1]).abs()
    if norm == "l1":
        return diff.sum(-1)
    if norm == "chebyshev":
        return diff.amax(-1) if diff.numel() else diff.sum(-1)
    raise ValueError(f"step_lengths: norm must be 'l1' or 'chebyshev', got {norm!r}")
