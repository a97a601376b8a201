"""Mask tokenisers for autoregressive segmentation (registry ``MASK_TOKENIZERS``; REFERENCE §5.6): a label map
(H×W int, 0 background, 1..K classes) <-> a token sequence a decoder-only transformer can predict, with the
constraint a decoder needs at every step (which tokens may come next).

    tok = build(MASK_TOKENIZERS, dict(name="grid", grid=16, num_classes=4))
    seq = tok.encode(label)                 # LongTensor [BOS, c_00, c_01, ..., c_GG, EOS]
    back = tok.decode(seq, size=(H, W))     # H×W labels: the G×G grid, nearest-upsampled
    ok = tok.allowed(seq[:n])               # bool over the vocabulary: the tokens valid after this prefix

- ``grid`` (Text4Seg's first step, GiT's labels): the map resampled to a G×G grid of class tokens, row-major;
  fixed length G² + 2. ``resample="nearest"`` samples each cell's centre (Text4Seg), ``"majority"`` takes the
  cell's most frequent label (ties to the lower label), which keeps thin structures slightly better.
- ``rle`` (Text4Seg's row-wise run-length): the same grid, each row as (class, run length) pairs whose lengths sum
  to G; a run never repeats the class of the run before it in the same row (one canonical sequence per grid).
  Variable length, at most 2·G² + 2.

Vocabulary: class tokens 0..K (0 = background), then for ``rle`` the lengths 1..G, then BOS and EOS. Written here:
no library tokenises masks for a sequence model (Text4Seg's code emits text labels for an LLM's tokenizer).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from core.errors import ConfigError
from core.registry import MASK_TOKENIZERS

RESAMPLE = ("nearest", "majority")


class MaskTokenizer:
    """Shared by the tokenisers: the grid, its resampling, and the vocabulary's class / BOS / EOS tokens."""

    def __init__(self, grid: int = 16, num_classes: int = 4, resample: str = "nearest"):
        if int(grid) < 1:
            raise ConfigError(f"tokenizer.grid must be >= 1, got {grid}")
        if int(num_classes) < 1:
            raise ConfigError(f"tokenizer.num_classes must be >= 1, got {num_classes}")
        if resample not in RESAMPLE:
            raise ConfigError(f"tokenizer.resample must be one of {', '.join(RESAMPLE)}, got {resample!r}")
        self.grid, self.num_classes, self.resample = int(grid), int(num_classes), resample

    # vocabulary -------------------------------------------------------------------------------------------
    @property
    def num_labels(self) -> int:  # class tokens, background included
        return self.num_classes + 1

    @property
    def vocab_size(self) -> int:
        raise NotImplementedError

    @property
    def bos(self) -> int:
        return self.vocab_size - 2

    @property
    def eos(self) -> int:
        return self.vocab_size - 1

    # grid ------------------------------------------------------------------------------------------------
    def to_grid(self, label: torch.Tensor) -> torch.Tensor:
        """H×W labels -> G×G labels (``resample``)."""
        label = torch.as_tensor(label).long()
        if label.dim() != 2:
            raise ConfigError(f"tokenizer: a label map is H×W, got shape {tuple(label.shape)}")
        if label.min() < 0 or label.max() > self.num_classes:
            raise ConfigError(f"tokenizer: labels must be in 0..{self.num_classes}, got {int(label.min())}.."
                              f"{int(label.max())}")
        g = self.grid
        if self.resample == "nearest":
            h, w = label.shape
            ys = ((torch.arange(g) + 0.5) * h / g).long().clamp_(max=h - 1)
            xs = ((torch.arange(g) + 0.5) * w / g).long().clamp_(max=w - 1)
            return label[ys][:, xs]
        onehot = F.one_hot(label, self.num_labels).permute(2, 0, 1)[None].float()  # 1×L×H×W
        share = F.adaptive_avg_pool2d(onehot, g)[0]  # L×G×G: each label's share of the cell
        return share.argmax(0)  # ties: the lower label (argmax takes the first maximum)

    def from_grid(self, grid: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """G×G labels -> H×W labels (nearest)."""
        return F.interpolate(grid[None, None].float(), size=tuple(size), mode="nearest")[0, 0].long()

    # the interface -----------------------------------------------------------------------------------------
    def encode(self, label: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def decode_grid(self, seq: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def decode(self, seq: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        return self.from_grid(self.decode_grid(seq), size)

    def allowed(self, prefix: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def allowed_batch(self, prefixes: torch.Tensor) -> torch.Tensor:
        """N×n prefixes (all of length n) -> N×vocab bool: ``allowed`` of each row."""
        return torch.stack([self.allowed(row) for row in prefixes.cpu()]).to(prefixes.device)

    def max_length(self) -> int:
        raise NotImplementedError

    def _body(self, seq: torch.Tensor) -> list[int]:
        seq = [int(t) for t in torch.as_tensor(seq).tolist()]
        if not seq or seq[0] != self.bos or seq[-1] != self.eos:
            raise ValueError(f"{type(self).__name__}: a sequence starts with BOS ({self.bos}) and ends with EOS "
                             f"({self.eos}), got {seq[:3]}...{seq[-3:]}")
        return seq[1:-1]


@MASK_TOKENIZERS.register()
class grid(MaskTokenizer):
    """One class token per grid cell, row-major; fixed length G² + 2 (see the module docstring)."""

    @property
    def vocab_size(self) -> int:
        return self.num_labels + 2

    def max_length(self) -> int:
        return self.grid ** 2 + 2

    def encode(self, label):
        cells = self.to_grid(label).flatten()
        return torch.cat([torch.tensor([self.bos]), cells, torch.tensor([self.eos])])

    def decode_grid(self, seq):
        body = self._body(seq)
        if len(body) != self.grid ** 2 or any(not 0 <= t < self.num_labels for t in body):
            raise ValueError(f"grid tokenizer: expected {self.grid ** 2} class tokens between BOS and EOS, got "
                             f"{len(body)}")
        return torch.tensor(body).view(self.grid, self.grid)

    def allowed(self, prefix):
        n = len(prefix)
        ok = torch.zeros(self.vocab_size, dtype=torch.bool)
        if n == 0:
            ok[self.bos] = True
        elif n <= self.grid ** 2:
            ok[:self.num_labels] = True
        elif n == self.grid ** 2 + 1:
            ok[self.eos] = True
        return ok  # all False once the sequence is complete

    def allowed_batch(self, prefixes):  # the constraint depends on the position alone
        return self.allowed(prefixes[0].cpu()).to(prefixes.device).repeat(len(prefixes), 1)


@MASK_TOKENIZERS.register()
class rle(MaskTokenizer):
    """Row-wise run-length of the grid: (class, length) pairs, lengths summing to G per row (module docstring)."""

    @property
    def vocab_size(self) -> int:
        return self.num_labels + self.grid + 2

    def max_length(self) -> int:
        return 2 * self.grid ** 2 + 2

    def length_token(self, n: int) -> int:
        return self.num_labels + n - 1

    def encode(self, label):
        out = [self.bos]
        for row in self.to_grid(label).tolist():
            start = 0
            for x in range(1, self.grid + 1):
                if x == self.grid or row[x] != row[start]:
                    out += [row[start], self.length_token(x - start)]
                    start = x
        return torch.tensor(out + [self.eos])

    def decode_grid(self, seq):
        body = self._body(seq)
        if len(body) % 2:
            raise ValueError("rle tokenizer: the body must be (class, length) pairs")
        rows, row = [], []
        for c, n in zip(body[0::2], body[1::2]):
            length = n - self.num_labels + 1
            if not 0 <= c < self.num_labels or not 1 <= length <= self.grid - len(row):
                raise ValueError(f"rle tokenizer: invalid pair ({c}, {n}) in row {len(rows)}")
            row += [c] * length
            if len(row) == self.grid:
                rows.append(row)
                row = []
        if row or len(rows) != self.grid:
            raise ValueError(f"rle tokenizer: {len(rows)} complete rows, expected {self.grid}")
        return torch.tensor(rows)

    def allowed(self, prefix):
        prefix = [int(t) for t in torch.as_tensor(prefix).tolist()]
        ok = torch.zeros(self.vocab_size, dtype=torch.bool)
        if not prefix:
            ok[self.bos] = True
            return ok
        if prefix[-1] == self.eos:
            return ok
        body = prefix[1:]
        filled, last_class = 0, None  # cells filled so far, and the class of the current row's last run
        for c, n in zip(body[0::2], body[1::2]):
            filled += n - self.num_labels + 1
            last_class = None if filled % self.grid == 0 else c
        if len(body) % 2:  # a class was emitted: its length, up to the rest of the row
            room = self.grid - filled % self.grid
            ok[self.num_labels:self.num_labels + room] = True
        elif filled == self.grid ** 2:
            ok[self.eos] = True
        else:
            ok[:self.num_labels] = True
            if last_class is not None:
                ok[last_class] = False  # a run never repeats the class of the run before it
        return ok
