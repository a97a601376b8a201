"""AR-SEG (seed 000's last design; REFERENCE §5.6): decoder-only autoregressive segmentation.

    frame(s) -> conv stem (stride 16) -> image-patch tokens + 2D sine position (+ frame embedding)  = prefix
    [prefix | BOS, m_1, ..., m_{L-1}] -> one PrefixDecoder (prefix bidirectional, mask tokens causal)
        -> next-token logits over the tokeniser's vocabulary (``MASK_TOKENIZERS``: grid / rle)
    decoded G×G grid (one-hot) + the stem's stride-4 features -> refiner (3 convs) -> full-resolution logits

- **Training** (annotated frames only, as the U-Net): teacher forcing, cross-entropy on the next token
  (``loss_token``), plus the refiner's CE + Dice at full resolution (``loss_ce`` / ``loss_dice``). The refiner
  is fed what the decoder would give it: the teacher-forced argmax grid for the ``grid`` tokeniser; for ``rle``,
  whose teacher-forced argmax is not a valid sequence, the GT grid with ``refiner_noise`` of the cells relabelled.
- **Inference**: constrained decoding with a KV cache (only the tokens the tokeniser allows at each step);
  ``decode.mode`` = ``greedy``, ``sample`` (temperature) or ``consensus`` (per-cell majority of ``samples``
  sampled grids, the AR-specific answer for ambiguous frames). Probabilities are the refiner's softmax, or the
  decoded grid itself with ``refiner=None`` or ``decode.refine=False``.
- **Control** ``order="parallel"``: the same network and the same parameters, but every mask position gets the
  BOS embedding as input and attends to all mask positions, so all tokens come from the prefix in one pass;
  the difference to ``"causal"`` is next-token prediction alone.
- **Video variant** ``prefix_frames=2``: the previous frame of the clip (clamped at the first) is a second
  prefix with its own frame embedding.
- **Cell features** (``cell_features=True``, grid tokenizer): the input of the position that predicts cell i also
  carries the stem's stride-8 feature of cell i (projected to D), as GiT's grid queries carry their window's
  features; without them the decoder leaned on the sequence prior (the cell to the left) and greedy decoding
  drifted off the image (README).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from core.errors import ConfigError
from core.registry import LOSSES, MASK_TOKENIZERS, MODELS, build
from models.arseg import tokenizers
from models.arseg.transformer import ORDERS, PrefixDecoder
from models.base import MetaArch, check_choice
from models.layers import masks_to_labels, sine_pos_2d
from models.metaarchs.unet_baseline import IMAGENET_MEAN, IMAGENET_STD

MODES = ("greedy", "sample", "consensus")
DECODE_DEFAULTS = dict(mode="greedy", samples=8, temperature=1.0, seed=0, chunk=128, refine=True)


def _conv(cin: int, cout: int, stride: int = 1, k: int = 3) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, k // 2, bias=False), nn.GroupNorm(8, cout), nn.GELU())


class Stem(nn.Module):
    """Three stride-2 convolutions and a 2×2 patch projection: N×3×H×W -> tokens N×D×H/16×W/16, the stride-4
    features N×C1×H/4×W/4 the refiner uses and the stride-8 features N×C2×H/8×W/8 of the grid cells."""

    def __init__(self, channels: tuple[int, int, int], dim: int):
        super().__init__()
        c0, c1, c2 = channels
        self.s2, self.s4, self.s8 = _conv(3, c0, 2), _conv(c0, c1, 2), _conv(c1, c2, 2)
        self.patch = nn.Conv2d(c2, dim, 2, 2)

    def forward(self, x):
        f4 = self.s4(self.s2(x))
        f8 = self.s8(f4)
        return self.patch(f8), f4, f8


class Refiner(nn.Module):
    """Decoded grid (one-hot, N×L×G×G) + stride-4 features -> N×L×H×W logits. The grid also enters the logits
    directly (scaled by a learned gain), so the convolutions learn a correction of the grid, not a segmentation."""

    def __init__(self, labels: int, feat_channels: int, channels: int):
        super().__init__()
        self.net = nn.Sequential(_conv(labels + feat_channels, channels), _conv(channels, channels),
                                 nn.Conv2d(channels, labels, 1))
        self.gain = nn.Parameter(torch.tensor(4.0))

    def forward(self, grid_onehot, feats, size):
        g = F.interpolate(grid_onehot, size=feats.shape[-2:], mode="nearest")
        logits = self.net(torch.cat([g, feats], 1)) + self.gain * g
        return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)


@MODELS.register()
class ARSeg(MetaArch):
    # fvcore's JIT trace of predict loses the decoder stack (measured: 0.79 of the parallel control's 8.42 GMACs
    # per clip at 128²), so the dispatcher-level counter, which follows every call, counts this model
    fvcore_traceable = False

    def __init__(self, num_classes: int = 4, tokenizer: dict | None = None, dim: int = 160, depth: int = 6,
                 heads: int = 5, mlp_ratio: float = 3.0, stem: list[int] = (32, 64, 96), order: str = "causal",
                 prefix_frames: int = 1, cell_features: bool = False, refiner: dict | None = None,
                 token_weight: float = 1.0,
                 refiner_noise: float = 0.1, loss: dict | None = None, decode: dict | None = None):
        """
        tokenizer: a ``MASK_TOKENIZERS`` entry (default ``grid``, G 16); its num_classes is ours.
        dim / depth / heads / mlp_ratio: the decoder; stem: the three stem widths.
        order: "causal" (AR-SEG) or "parallel" (the control). prefix_frames: 1 (per frame) or 2 (+ previous frame).
        cell_features: add to the input of the position that predicts grid cell i the stem's stride-8 feature of
            that cell (grid tokenizer only; without it greedy decoding drifts from the image, see the README).
        refiner: dict(channels=32) or None (the decoded grid is the prediction).
        token_weight: weight of the next-token CE; loss: the refiner's CEDiceLoss weights.
        decode: mode ("greedy" | "sample" | "consensus"), samples, temperature, seed, chunk (rows per decoding
            pass), refine (False: the decoded grid is the prediction even with a refiner, the grid-only ablation).
        """
        super().__init__()
        self.num_classes = num_classes
        self.order = check_choice("order", order, ORDERS)
        if prefix_frames not in (1, 2):
            raise ConfigError(f"model.prefix_frames must be 1 (this frame) or 2 (and the previous one), got "
                              f"{prefix_frames!r}")
        self.prefix_frames = prefix_frames
        self.tokenizer = build(MASK_TOKENIZERS, dict(tokenizer or {}), key="tokenizer", default="grid",
                               num_classes=num_classes)
        tok = self.tokenizer
        self.per_cell = isinstance(tok, tokenizers.grid)  # one position per grid cell (fixed length)
        if order == "parallel" and not self.per_cell:
            raise ConfigError(f"model.order='parallel' needs the fixed-length 'grid' tokenizer (every position known "
                              f"in advance), got {type(tok).__name__!r}")
        if cell_features and not self.per_cell:
            raise ConfigError(f"model.cell_features=True needs the 'grid' tokenizer (a position per cell), got "
                              f"{type(tok).__name__!r}: set model.cell_features=False")
        self.decode_cfg = self._decode_config(decode)
        self.stem = Stem(tuple(stem), dim)
        self.embed = nn.Embedding(tok.vocab_size, dim)
        self.position = nn.Embedding(tok.max_length(), dim)  # position of the input token in the sequence
        self.frame_embed = nn.Embedding(prefix_frames, dim)
        self.decoder = PrefixDecoder(dim, depth, heads, mlp_ratio)
        self.head = nn.Linear(dim, tok.vocab_size)
        self.cell_proj = nn.Linear(stem[2], dim) if cell_features else None
        self.refiner = None if refiner is None else Refiner(tok.num_labels, stem[1], **refiner)
        self.token_weight, self.refiner_noise = float(token_weight), float(refiner_noise)
        self.criterion = build(LOSSES, loss or {}, key="loss", default="CEDiceLoss", num_classes=num_classes)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.last_decode: dict = {}  # tokens per mask and decoding seconds of the last predict (benchmarks)

    @staticmethod
    def _decode_config(decode: dict | None) -> dict:
        cfg = dict(DECODE_DEFAULTS)
        unknown = sorted(set(decode or {}) - set(cfg))
        if unknown:
            raise ConfigError(f"model.decode: unknown key(s) {unknown}; known: {sorted(cfg)}")
        cfg.update(decode or {})
        check_choice("decode.mode", cfg["mode"], MODES)
        if int(cfg["samples"]) < 1 or float(cfg["temperature"]) <= 0:
            raise ConfigError(f"model.decode: samples must be >= 1 and temperature > 0, got {cfg['samples']} / "
                              f"{cfg['temperature']}")
        return cfg

    # ---- prefix -----------------------------------------------------------------------------------------
    def _prefix(self, frames: torch.Tensor, previous: torch.Tensor | None):
        """frames N×3×H×W (and their previous frames) -> (prefix N×P×D, stride-4 features of ``frames``, cell
        features N×(L-1)×D of the input positions or None)."""
        tokens, feats, f8 = self.stem((frames - self.mean) / self.std)
        n, d, h, w = tokens.shape
        pos = sine_pos_2d(h, w, d, tokens.device)
        prefix = [tokens.flatten(2).transpose(1, 2) + pos + self.frame_embed.weight[0]]
        if self.prefix_frames == 2:
            prev = self.stem((previous - self.mean) / self.std)[0]
            prefix.insert(0, prev.flatten(2).transpose(1, 2) + pos + self.frame_embed.weight[1])
        cells = None
        if self.cell_proj is not None:  # input position i predicts cell i; the last one (EOS) has no cell
            g = self.tokenizer.grid
            cells = self.cell_proj(F.adaptive_avg_pool2d(f8, g).flatten(2).transpose(1, 2))  # N×G²×D
            cells = F.pad(cells, (0, 0, 0, self.tokenizer.max_length() - 1 - g * g))
        return torch.cat(prefix, 1), feats, cells

    def _inputs(self, seq: torch.Tensor, start: int = 0, cells: torch.Tensor | None = None) -> torch.Tensor:
        """Token ids N×L (at sequence positions start..) -> embeddings N×L×D (+ the cell features of those
        positions); the parallel control sees BOS at every position."""
        if self.order == "parallel":
            seq = torch.full_like(seq, self.tokenizer.bos)
        pos = torch.arange(start, start + seq.shape[1], device=seq.device)
        x = self.embed(seq) + self.position(pos)
        return x if cells is None else x + cells[:, start:start + seq.shape[1]]

    # ---- training ---------------------------------------------------------------------------------------
    def _encode(self, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """N×H×W labels -> (N×L token ids, padded with EOS after a shorter sequence's end; N lengths)."""
        seqs = [self.tokenizer.encode(lab.cpu()) for lab in labels]
        length = max(len(s) for s in seqs)
        out = torch.full((len(seqs), length), self.tokenizer.eos, dtype=torch.long)
        for i, s in enumerate(seqs):
            out[i, :len(s)] = s
        return out.to(labels.device), torch.tensor([len(s) for s in seqs], device=labels.device)

    def _refiner_input(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """What the refiner trains on (N×G×G labels): the teacher-forced argmax grid, or for rle the noisy GT grid."""
        tok, g = self.tokenizer, self.tokenizer.grid
        if self.per_cell:
            return logits[:, :g * g, :tok.num_labels].detach().argmax(-1).view(-1, g, g)
        grids = torch.stack([tok.to_grid(lab.cpu()) for lab in labels]).to(labels.device)
        flip = torch.rand(grids.shape, device=grids.device) < self.refiner_noise
        return torch.where(flip, torch.randint_like(grids, tok.num_labels), grids)

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        has_ann, video = batch["has_ann"], batch["video"]  # B×T, B×T×3×H×W
        b = has_ann.shape[0]
        clip_idx, frame_idx = has_ann.nonzero(as_tuple=True)
        frames = video[clip_idx, frame_idx]
        previous = video[clip_idx, (frame_idx - 1).clamp(min=0)] if self.prefix_frames == 2 else None
        labels = masks_to_labels(batch["masks"])[clip_idx, frame_idx]  # N×H×W
        # each clip weighs 1/B, shared by its annotated frames (as the U-Net: DDP-equivalent means)
        weights = 1.0 / (has_ann.sum(1).clamp(min=1).float() * b)[clip_idx]  # N

        prefix, feats, cells = self._prefix(frames, previous)
        seq, lengths = self._encode(labels)
        hidden = self.decoder(prefix, self._inputs(seq[:, :-1], 0, cells), self.order)
        logits = self.head(hidden)  # N×(L-1)×V: position i predicts token i+1
        target = seq[:, 1:]
        valid = torch.arange(target.shape[1], device=target.device)[None] < (lengths[:, None] - 1)
        ce = F.cross_entropy(logits.transpose(1, 2).float(), target, reduction="none")  # N×(L-1)
        per_frame = (ce * valid).sum(1) / valid.sum(1)
        losses = {"loss_token": self.token_weight * (per_frame * weights).sum()}
        if self.refiner is not None:
            grid = self._refiner_input(logits, labels)
            onehot = F.one_hot(grid, self.tokenizer.num_labels).permute(0, 3, 1, 2).float()
            losses.update(self.criterion(self.refiner(onehot, feats, labels.shape[-2:]), labels, weights))
        return losses

    # ---- decoding ---------------------------------------------------------------------------------------
    def _choose(self, logits: torch.Tensor, allowed: torch.Tensor, sample: bool, generator) -> torch.Tensor:
        logits = logits.float().masked_fill(~allowed, float("-inf"))
        if not sample:
            return logits.argmax(-1)
        probs = (logits / float(self.decode_cfg["temperature"])).softmax(-1)
        return torch.multinomial(probs, 1, generator=generator)[:, 0]

    @torch.no_grad()
    def generate(self, prefix: torch.Tensor, cells: torch.Tensor | None = None, sample: bool = False,
                 generator: torch.Generator | None = None, use_cache: bool = True) -> torch.Tensor:
        """prefix N×P×D (and cell features N×(L-1)×D) -> N×L token ids (BOS ... EOS, EOS-padded), by constrained
        decoding; ``use_cache=False`` reruns the whole sequence at every step (the reference the cache is tested
        against)."""
        tok = self.tokenizer
        n, device = prefix.shape[0], prefix.device
        seq = torch.full((n, 1), tok.bos, dtype=torch.long, device=device)
        if self.order == "parallel":
            m = tok.max_length() - 1
            logits = self.head(self.decoder(prefix, self._inputs(seq.expand(n, m), 0, cells), "parallel"))
            for i in range(m):  # position i's output is token i+1, under the constraint after the tokens so far
                allowed = tok.allowed_batch(seq)
                seq = torch.cat([seq, self._choose(logits[:, i], allowed, sample, generator)[:, None]], 1)
            return seq
        finished = torch.zeros(n, dtype=torch.bool, device=device)
        if use_cache:
            out, caches = self.decoder.prefill(prefix, self._inputs(seq, 0, cells), tok.max_length())
        else:
            out = self.decoder(prefix, self._inputs(seq, 0, cells))
        for step in range(1, tok.max_length()):
            allowed = tok.allowed_batch(seq)
            allowed[finished] = False
            allowed[finished, tok.eos] = True  # a finished sequence is padded with EOS
            if bool((allowed.sum(1) == 1).all()) and bool(allowed[:, tok.eos].all()):
                return torch.cat([seq, seq.new_full((n, 1), tok.eos)], 1)  # forced end: no forward pass needed
            nxt = self._choose(self.head(out[:, -1]), allowed, sample, generator)
            seq = torch.cat([seq, nxt[:, None]], 1)
            finished |= nxt == tok.eos
            if bool(finished.all()):
                break
            if use_cache:
                out = self.decoder.step(self._inputs(nxt[:, None], step, cells), caches)
            else:
                out = self.decoder(prefix, self._inputs(seq, 0, cells))
        return seq

    def _grids(self, seqs: torch.Tensor) -> torch.Tensor:
        """N×L token ids -> N×G×G labels (each sequence cut at its first EOS)."""
        out = []
        for s in seqs.cpu():
            end = int((s == self.tokenizer.eos).nonzero()[0])
            out.append(self.tokenizer.decode_grid(s[:end + 1]))
        return torch.stack(out).to(seqs.device)

    def decode_frames(self, frames: torch.Tensor, previous: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """N×3×H×W frames -> {"grid": N×G×G labels, "logits": N×(K+1)×H×W or None, "tokens": N sequence
        lengths}, by ``decode`` (greedy / sample / consensus)."""
        cfg = self.decode_cfg
        mode, samples = cfg["mode"], int(cfg["samples"]) if cfg["mode"] == "consensus" else 1
        generator = torch.Generator(device=frames.device).manual_seed(int(cfg["seed"]))
        prefix, feats, cells = self._prefix(frames, previous)
        n, labels = prefix.shape[0], self.tokenizer.num_labels
        rows = prefix.repeat_interleave(samples, 0).split(int(cfg["chunk"]))
        row_cells = [None] * len(rows) if cells is None else cells.repeat_interleave(samples, 0).split(int(cfg["chunk"]))
        seqs = [self.generate(p, c, sample=mode != "greedy", generator=generator) for p, c in zip(rows, row_cells)]
        width = max(s.shape[1] for s in seqs)
        seqs = torch.cat([F.pad(s, (0, width - s.shape[1]), value=self.tokenizer.eos) for s in seqs])
        g = self.tokenizer.grid
        grids = self._grids(seqs).view(n, samples, g, g)
        votes = F.one_hot(grids, labels).sum(1)  # N×G×G×L: the consensus (one sample: that sample)
        grid = votes.argmax(-1)  # ties: the lower label
        lengths = ((seqs != self.tokenizer.eos).sum(1) + 1).float()  # BOS ... EOS
        logits = None
        if self.refiner is not None and cfg["refine"]:
            onehot = F.one_hot(grid, labels).permute(0, 3, 1, 2).float()
            logits = self.refiner(onehot, feats, frames.shape[-2:])
        return {"grid": grid, "logits": logits, "tokens": lengths}

    @torch.no_grad()
    def predict(self, batch: dict) -> dict[str, torch.Tensor]:
        video = batch["video"]  # B×T×3×H×W
        b, t = video.shape[:2]
        frames = video.flatten(0, 1)
        previous = None
        if self.prefix_frames == 2:
            previous = torch.cat([video[:, :1], video[:, :-1]], 1).flatten(0, 1)  # frame t-1, clamped at 0
        out = self.decode_frames(frames, previous)
        if out["logits"] is not None:
            probs = out["logits"].float().softmax(1)[:, 1:]
        else:
            grid = self.tokenizer.from_grid  # nearest upsampling of each decoded grid
            labels = torch.stack([grid(g, video.shape[-2:]) for g in out["grid"]])
            probs = F.one_hot(labels, self.tokenizer.num_labels).permute(0, 3, 1, 2)[:, 1:].float()
        self.last_decode = {"tokens_per_mask": float(out["tokens"].mean())}
        return {"probs": probs.unflatten(0, (b, t))}
