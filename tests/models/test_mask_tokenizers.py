"""Mask tokenisers for autoregressive segmentation (``models/arseg/tokenizers.py``): encode -> decode of a label map
equals its grid resampling, the grid and RLE tokenisers agree, every valid sequence passes the decoding constraint
step by step, constrained random decoding never emits an invalid sequence, and known small cases."""
from __future__ import annotations

import pytest
import torch

import models  # noqa: F401
from core.errors import ConfigError
from core.registry import MASK_TOKENIZERS, build


def _labels(seed: int, h: int = 40, w: int = 52, k: int = 4) -> torch.Tensor:
    """Blocky label maps: a few random rectangles of classes 1..k on background."""
    g = torch.Generator().manual_seed(seed)
    lab = torch.zeros(h, w, dtype=torch.long)
    for _ in range(6):
        y, x = torch.randint(0, h - 4, (2,), generator=g).tolist()[0], torch.randint(0, w - 4, (1,), generator=g).item()
        dy, dx = torch.randint(3, h // 2, (1,), generator=g).item(), torch.randint(3, w // 2, (1,), generator=g).item()
        lab[y:y + dy, x:x + dx] = torch.randint(1, k + 1, (1,), generator=g).item()
    return lab


def test_known_case_grid_and_rle():
    lab = torch.tensor([[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 2, 2], [2, 2, 0, 0]])
    g = build(MASK_TOKENIZERS, dict(name="grid", grid=2, num_classes=2))
    # vocabulary: classes 0, 1, 2; BOS 3, EOS 4; nearest samples the cells' centres (rows/cols 1 and 3)
    assert g.vocab_size == 5 and g.encode(lab).tolist() == [3, 0, 1, 2, 0, 4]
    r = build(MASK_TOKENIZERS, dict(name="rle", grid=4, num_classes=2))
    # vocabulary: classes 0-2, lengths 1-4 = tokens 3-6, BOS 7, EOS 8
    assert r.encode(lab).tolist() == [7, 0, 4, 1, 4, 0, 4, 1, 4, 2, 6, 2, 4, 0, 4, 8]
    assert torch.equal(r.decode(r.encode(lab), (4, 4)), lab)
    maj = build(MASK_TOKENIZERS, dict(name="grid", grid=2, num_classes=2, resample="majority"))
    assert maj.to_grid(lab).tolist() == [[0, 1], [2, 0]]  # the bottom-right cell: 2 of 4 pixels are class 2, 2 are 0


@pytest.mark.parametrize("resample", ["nearest", "majority"])
@pytest.mark.parametrize("g", [4, 16])
def test_round_trips_and_the_two_tokenizers_agree(resample, g):
    grid = build(MASK_TOKENIZERS, dict(name="grid", grid=g, num_classes=4, resample=resample))
    rle = build(MASK_TOKENIZERS, dict(name="rle", grid=g, num_classes=4, resample=resample))
    for seed in range(6):
        lab = _labels(seed)
        cells = grid.to_grid(lab)
        assert torch.equal(grid.decode_grid(grid.encode(lab)), cells)
        assert torch.equal(rle.decode_grid(rle.encode(lab)), cells)
        assert torch.equal(grid.decode(grid.encode(lab), lab.shape), rle.decode(rle.encode(lab), lab.shape))
        assert len(grid.encode(lab)) == g * g + 2 and len(rle.encode(lab)) <= rle.max_length()
    if g == 16 and resample == "nearest":  # a grid-aligned map comes back exactly
        aligned = torch.kron(grid.to_grid(_labels(1)), torch.ones(3, 3, dtype=torch.long))
        assert torch.equal(grid.decode(grid.encode(aligned), aligned.shape), aligned)


@pytest.mark.parametrize("name", ["grid", "rle"])
def test_constraint_accepts_every_valid_sequence_and_random_constrained_decoding_is_always_valid(name):
    tok = build(MASK_TOKENIZERS, dict(name=name, grid=6, num_classes=3))
    for seed in range(5):
        seq = tok.encode(_labels(seed, k=3))
        for n in range(len(seq)):
            assert tok.allowed(seq[:n])[seq[n]], (n, seq[:n + 1].tolist())
        assert not tok.allowed(seq).any()  # complete: nothing may follow
    g = torch.Generator().manual_seed(0)
    for _ in range(40):  # sample uniformly among the allowed tokens until nothing is allowed
        seq = []
        while True:
            ok = tok.allowed(torch.tensor(seq, dtype=torch.long))
            if not ok.any():
                break
            choices = ok.nonzero()[:, 0]
            seq.append(int(choices[torch.randint(len(choices), (1,), generator=g)]))
            assert len(seq) <= tok.max_length()
        cells = tok.decode_grid(torch.tensor(seq))  # decodes without error
        assert cells.shape == (6, 6)
        if name == "rle":  # canonical: re-encoding the decoded grid gives the same sequence
            assert tok.encode(tok.from_grid(cells, (6, 6))).tolist() == seq


def test_bad_input():
    with pytest.raises(ConfigError, match="resample must be one of nearest, majority"):
        build(MASK_TOKENIZERS, dict(name="grid", resample="area"))
    tok = build(MASK_TOKENIZERS, dict(name="grid", grid=4, num_classes=2))
    with pytest.raises(ConfigError, match=r"labels must be in 0..2, got 0..3"):
        tok.encode(torch.tensor([[0, 3], [1, 2]]))
    with pytest.raises(ValueError, match="starts with BOS"):
        tok.decode_grid(torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="expected 16 class tokens"):
        tok.decode_grid(torch.tensor([tok.bos, 0, 1, tok.eos]))
