"""Whole-video inference in temporal windows with bounded memory.

A test clip of the evaluator is ~11 frames; a real echo video is hundreds. :func:`predict_video` labels every
frame of a video of any length by running ``model.predict`` on windows of ``window`` frames, ``overlap`` of them
shared between consecutive windows, and keeps only:

- the uint8 ``T×H'×W'`` output (the one allocation that grows with T: ``T·H'·W'`` bytes),
- one window's uint8 slice, its float model input and the model's activations,
- a running mean of the probabilities of the frames the next window will cover again (at most ``window − 1``
  frames at model resolution).

``frames`` may be a numpy memmap (``CachedVideo.image()``): only the current window is read and converted.

A model with the stateful video API (``models.base.MetaArch.has_video_api``: ``init_video`` / ``add_prompts`` /
``propagate``) is not windowed: it owns its memory over the video. :func:`iter_video_probs` then prepares every
frame (window by window, as above) and hands the whole ``T×3×h×w`` video to ``init_video``, and
:func:`predict_with_video_api` does the same for a batch of whole videos in evaluation.

Preprocessing is exactly :class:`data_schedule.mappers.clip_mapper.ClipEvalMapper`'s: the uint8 ``t×1×H×W``
slice is resized with ``torchvision.transforms.v2.functional.resize(..., size, antialias=True)``, then
``.float() / 255`` and grey expanded to 3 channels. Postprocessing is the evaluator's: probabilities are resized
to ``out_size`` bilinearly (``align_corners=False``) and turned into labels with
:func:`evaluators.metrics.probs_to_labels`.

Windows (see :func:`windows`): starts are ``0, stride, 2·stride, ...`` with ``stride = window − overlap`` while a
whole window fits; if the video does not end on a window boundary the **last window is shifted back** to end at
the last frame, so every window has exactly ``window`` frames (a temporal model always sees the clip length it
expects; the last overlap is then larger than ``overlap``). A video shorter than ``window`` is one window of all
its frames. A frame covered by several windows gets the mean of their probabilities.
"""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.transforms import v2

from evaluators.metrics import probs_to_labels


def _as_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    return int(value)


def windows(num_frames: int, window: int, overlap: int = 0) -> list[tuple[int, int]]:
    """Temporal windows ``[(start, end), ...]`` (end exclusive) covering frames ``0..num_frames-1``.

    ``stride = window − overlap`` (must be ≥ 1, i.e. ``0 <= overlap < window``). Starts are multiples of the stride
    while a full window fits; when the last regular window ends before ``num_frames`` one more window
    ``(num_frames − window, num_frames)`` is added (shifted back, so it overlaps its predecessor by more than
    ``overlap``). ``num_frames <= window`` gives the single window ``(0, num_frames)``; ``num_frames == 0`` gives
    ``[]``. Starts and ends are strictly increasing.
    """
    num_frames, window, overlap = (_as_int(n, v) for n, v in
                                   (("num_frames", num_frames), ("window", window), ("overlap", overlap)))
    if num_frames < 0:
        raise ValueError(f"num_frames must be >= 0, got {num_frames}")
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    if not 0 <= overlap < window:
        raise ValueError(f"overlap must satisfy 0 <= overlap < window ({window}) so that the stride "
                         f"window - overlap is >= 1, got overlap {overlap}")
    if num_frames == 0:
        return []
    if num_frames <= window:
        return [(0, num_frames)]
    stride = window - overlap
    out = [(s, s + window) for s in range(0, num_frames - window + 1, stride)]
    if out[-1][1] < num_frames:
        out.append((num_frames - window, num_frames))
    return out


def _check_frames(frames) -> tuple[int, int, int]:
    if not isinstance(frames, (np.ndarray, torch.Tensor)):
        raise ValueError(f"frames must be a numpy array or torch tensor, got {type(frames).__name__}")
    if frames.ndim != 3:
        raise ValueError(f"frames must be T×H×W, got shape {tuple(frames.shape)}")
    if frames.dtype not in (np.uint8, torch.uint8):
        raise ValueError(f"frames must be uint8, got {frames.dtype}")
    return tuple(int(x) for x in frames.shape)


def _check_size(name: str, size) -> tuple[int, int]:
    try:
        h, w = (int(x) for x in size)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be (height, width), got {size!r}") from None
    if h < 1 or w < 1:
        raise ValueError(f"{name} must be positive, got {(h, w)}")
    return h, w


def _window_input(frames, start: int, end: int, size: tuple[int, int]) -> torch.Tensor:
    """Frames ``start:end`` -> t×3×h×w float in [0, 1], as ClipEvalMapper prepares a clip."""
    clip = frames[start:end]
    if isinstance(clip, np.ndarray):
        clip = torch.from_numpy(np.array(clip, copy=True))  # reads only this window of a memmap
    clip = v2.functional.resize(clip[:, None], list(size), antialias=True)
    return clip.float().div_(255.0).expand(-1, 3, -1, -1).contiguous()


@torch.no_grad()
def iter_video_probs(model, frames: np.ndarray | torch.Tensor, size: tuple[int, int], window: int,
                     overlap: int = 0, device=torch.device("cpu"), num_classes: int | None = None
                     ) -> Iterator[tuple[int, torch.Tensor]]:
    """Yield ``(start, probs)`` in frame order: ``probs`` is float32 ``n×K×h×w`` (h×w = ``size``, on ``device``) for
    frames ``start..start+n-1``, final (averaged over every window covering them). Consecutive chunks tile
    ``0..T-1``. Same arguments as :func:`predict_video`; the model is put in eval mode for the call and restored.
    """
    num_frames, _, _ = _check_frames(frames)
    size = _check_size("size", size)
    device = torch.device(device)
    wins = windows(num_frames, window, overlap)
    was_training = getattr(model, "training", False)
    if hasattr(model, "eval"):
        model.eval()
    if _has_video_api(model):
        try:
            chunks = [(s, min(s + window, num_frames)) for s in range(0, num_frames, window)]  # a partition
            video = torch.cat([_window_input(frames, s, e, size) for s, e in chunks]).to(device)
            probs = _propagate_all(model, model.init_video(video, {"num_frames": num_frames}), num_frames)
            for s, e in chunks:
                yield s, probs[s:e]
            return
        finally:
            model.train(was_training)
    try:
        pending = counts = None  # running mean of frames [start of this window, end of the previous window)
        for i, (s, e) in enumerate(wins):
            t = e - s
            video = _window_input(frames, s, e, size).to(device)
            batch = {"video": video[None], "has_ann": torch.ones(1, t, dtype=torch.bool, device=device),
                     "frame_idx": torch.arange(s, e, device=device)[None]}
            probs = model.predict(batch)["probs"]
            if probs.dim() != 5 or tuple(probs.shape[:2]) != (1, t) or tuple(probs.shape[-2:]) != size:
                raise ValueError(f"model.predict must return probs of shape 1×{t}×K×{size[0]}×{size[1]} for a "
                                 f"{t}-frame window, got {tuple(probs.shape)}")
            k = probs.shape[2]
            if num_classes is not None and k != num_classes:
                raise ValueError(f"model.predict returned {k} classes, expected num_classes={num_classes}")
            if k > 255:
                raise ValueError(f"{k} classes do not fit uint8 labels")
            probs = probs[0].float()
            cnt = torch.ones(t, device=probs.device)
            if pending is not None:  # (out of place: the model's output may alias its input or state)
                n = pending.shape[0]
                cnt[:n] += counts
                # running mean: identical contributions leave the value bit-for-bit unchanged
                probs = torch.cat([pending + (probs[:n] - pending) / cnt[:n].view(-1, 1, 1, 1), probs[n:]])
            nxt = wins[i + 1][0] if i + 1 < len(wins) else e
            done = nxt - s
            pending, counts = probs[done:].clone(), cnt[done:].clone()
            yield s, probs[:done]
            del probs, video, batch
    finally:
        if hasattr(model, "train"):
            model.train(was_training)


@torch.no_grad()
def predict_video(model, frames: np.ndarray | torch.Tensor, size: tuple[int, int], window: int, overlap: int = 0,
                  device=torch.device("cpu"), out_size: tuple[int, int] | None = None, num_classes: int | None = None
                  ) -> np.ndarray:
    """Label every frame of a video: ``T×H'×W'`` uint8 in ``0..K``.

    model: has ``predict(batch) -> {"probs": B×T×K×h×w}`` (the evaluator contract); it receives
        ``{"video": 1×t×3×h×w, "has_ann": 1×t bool (all True), "frame_idx": 1×t long}`` on ``device``. It is put in
        eval mode for the call (and restored afterwards); move it to ``device`` yourself.
    frames: ``T×H×W`` uint8 (numpy array, numpy memmap, or CPU tensor); only one window is read at a time.
    size: model input ``(h, w)``, as the eval mapper's ``size``.
    window, overlap: frames per window and frames shared by consecutive windows (``0 <= overlap < window``);
        see :func:`windows` for the end of the video (last window shifted back to keep ``window`` frames).
    out_size: output ``(H', W')``; default the input ``(H, W)``.
    num_classes: if given, the model's K must equal it.
    """
    num_frames, height, width = _check_frames(frames)
    out_size = (height, width) if out_size is None else _check_size("out_size", out_size)
    labels = np.empty((num_frames, *out_size), dtype=np.uint8)
    for s, probs in iter_video_probs(model, frames, size, window, overlap, device, num_classes):
        if tuple(probs.shape[-2:]) != out_size:
            probs = F.interpolate(probs, size=out_size, mode="bilinear", align_corners=False)
        labels[s:s + probs.shape[0]] = probs_to_labels(probs).to(torch.uint8).cpu().numpy()
    return labels


TIME_FIELDS = ("video", "masks", "has_ann", "scored", "frame_idx")  # batch fields with a time axis (B×T×...)


def _has_video_api(model) -> bool:
    from models.base import MetaArch

    return isinstance(model, MetaArch) and model.has_video_api


def _propagate_all(model, state, num_frames: int) -> torch.Tensor:
    """``propagate`` forwards, then backwards for the frames before the earliest prompt -> probs T×K×H×W (a
    frame neither pass reached: zeros)."""
    out: dict[int, torch.Tensor] = {}
    for reverse in (False, True):
        for t, res in model.propagate(state, reverse=reverse):
            if not 0 <= int(t) < num_frames:
                raise ValueError(f"{type(model).__name__}.propagate yielded frame {t} of a {num_frames}-frame video")
            out.setdefault(int(t), res["probs"].float())
        if len(out) == num_frames:
            break
    if not out:
        raise ValueError(f"{type(model).__name__}.propagate yielded no frame")
    first = next(iter(out.values()))
    probs = first.new_zeros(num_frames, *first.shape)
    for t, p in out.items():
        probs[t] = p
    return probs


@torch.no_grad()
def predict_with_video_api(model, batch: dict) -> dict[str, torch.Tensor]:
    """Whole videos through the model's stateful video API, one clip of the batch at a time:
    ``state = init_video(video[i], meta[i])``; prompts, if the batch has ``prompts`` (a dict of B×T×... tensors,
    e.g. ``boxes`` B×T×K×4), go in with ``add_prompts(state, t, {key: value[i, t]})`` on every frame ``t`` where
    ``prompts["frames"][i, t]`` is True (no ``frames`` key: every frame); then ``propagate`` forwards and, for
    the frames before the earliest prompt, backwards. Returns ``{"probs": B×T×K×H×W}``."""
    video = batch["video"]
    b, t = video.shape[:2]
    metas = batch.get("meta") or [{} for _ in range(b)]
    prompts = batch.get("prompts") or {}
    frames = prompts.get("frames")
    out = []
    for i in range(b):
        state = model.init_video(video[i], metas[i])
        if prompts:
            for f in range(t):
                if frames is None or bool(frames[i, f]):
                    model.add_prompts(state, f, {k: v[i, f] for k, v in prompts.items() if k != "frames"})
        out.append(_propagate_all(model, state, t))
    return {"probs": torch.stack(out)}


@torch.no_grad()
def predict_in_windows(model, batch: dict, window: int, overlap: int = 0) -> dict[str, torch.Tensor]:
    """``model.predict`` on a batch of long clips (the whole-video protocol), one temporal window at a time:
    each window gets the batch's time-major fields sliced to its frames (``meta`` and the rest unchanged), and a
    frame covered by several windows gets the mean of their probabilities. Windows as :func:`windows` (the last
    one shifted back, so the model always sees ``window`` frames when the video has that many).
    Returns ``{"probs": B×T×K×h×w}``."""
    t_len = batch["video"].shape[1]
    total = count = None
    for s, e in windows(t_len, window, overlap):
        sub = {k: (v[:, s:e] if k in TIME_FIELDS and torch.is_tensor(v) else v) for k, v in batch.items()}
        probs = model.predict(sub)["probs"].float()
        if probs.dim() != 5 or probs.shape[1] != e - s:
            raise ValueError(f"model.predict must return probs B×{e - s}×K×H×W for a {e - s}-frame window, got "
                             f"{tuple(probs.shape)}")
        if total is None:
            total = probs.new_zeros(probs.shape[0], t_len, *probs.shape[2:])
            count = probs.new_zeros(1, t_len, 1, 1, 1)
        total[:, s:e] += probs
        count[:, s:e] += 1
    return {"probs": total / count}
