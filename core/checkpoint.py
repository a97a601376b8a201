"""Checkpoint files: atomic writes, discovery in iteration order, validated loading.

A checkpoint is a dict with at least ``model``, ``optimizer``, ``scheduler``, ``iteration``, ``rng``, ``sampler``,
``hooks``, ``model_name`` and ``config``. Files are written to a temporary name in the same folder, fsynced and
renamed, so a crash mid-write never leaves a truncated file under a checkpoint's name.
"""
from __future__ import annotations

import logging
import os
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

logger = logging.getLogger(__name__)
_ITER_RE = re.compile(r"model_(\d+)\.pth$")


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message names the file and the reason."""


def save_atomic(obj: Any, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def remove_stale_temp_files(folder: str | Path) -> list[Path]:
    """Delete temporary files left by a process killed while writing a checkpoint (never a finished file)."""
    stale = sorted(Path(folder).glob(".model_*.tmp")) if Path(folder).is_dir() else []
    for p in stale:
        logger.warning(f"Removing a partial checkpoint left by an interrupted write: {p}")
        p.unlink()
    return stale


def checkpoint_iteration(path: Path) -> int:
    """Iteration encoded in a checkpoint's name; ``model_final.pth`` sorts last."""
    m = _ITER_RE.search(path.name)
    return int(m.group(1)) if m else (1 << 62 if path.name == "model_final.pth" else -1)


def list_checkpoints(folder: str | Path) -> list[Path]:
    """Periodic and final checkpoints in a folder (or its ``checkpoints/`` subfolder), in iteration order.
    ``model_best.pth`` is left out (it duplicates a periodic one)."""
    folder = Path(folder)
    if (folder / "checkpoints").is_dir():
        folder = folder / "checkpoints"
    if not folder.is_dir():
        return []
    files = [p for p in folder.glob("model_*.pth") if checkpoint_iteration(p) >= 0]
    return sorted(files, key=checkpoint_iteration)


def load_checkpoint(path: str | Path) -> dict:
    """Load a checkpoint onto the CPU; a missing, truncated or foreign file raises ``CheckpointError``."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"Checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:
        raise CheckpointError(f"Checkpoint {path} is corrupt or truncated ({type(e).__name__}: "
                              f"{str(e).splitlines()[0] if str(e) else ''})") from None
    if not isinstance(ckpt, dict) or "model" not in ckpt:
        raise CheckpointError(f"Checkpoint {path} is not a MedVidSeg checkpoint (no 'model' entry)")
    return ckpt


def latest_valid_checkpoint(folder: str | Path) -> tuple[Path, dict] | None:
    """Newest loadable checkpoint; corrupt newer ones are skipped with a warning naming them."""
    for path in reversed(list_checkpoints(folder)):
        try:
            return path, load_checkpoint(path)
        except CheckpointError as e:
            logger.warning("Skipping unusable checkpoint: %s", e)
    return None


def check_model_matches(ckpt: dict, path: str | Path, model_name: str, model: torch.nn.Module) -> None:
    """Refuse a checkpoint of another model, naming both and the first mismatching keys."""
    if ckpt.get("model_name") not in (None, model_name):
        raise CheckpointError(f"Checkpoint {path} holds a {ckpt['model_name']!r} model, but the config builds "
                              f"{model_name!r}")
    own, theirs = model.state_dict(), ckpt["model"]
    missing = [k for k in own if k not in theirs]
    unexpected = [k for k in theirs if k not in own]
    shape = [k for k in own if k in theirs and tuple(own[k].shape) != tuple(theirs[k].shape)]
    if missing or unexpected or shape:
        raise CheckpointError(
            f"Checkpoint {path} does not fit model {model_name!r}: {len(missing)} missing keys {missing[:3]}, "
            f"{len(unexpected)} unexpected {unexpected[:3]}, {len(shape)} with other shapes {shape[:3]}")


def get_rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
