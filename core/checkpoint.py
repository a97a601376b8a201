"""Checkpoint files: atomic writes, discovery in iteration order, validated and safe loading.

A checkpoint is a dict with at least ``model``, ``optimizer``, ``scheduler``, ``iteration``, ``rng``, ``sampler``,
``hooks``, ``model_name`` and ``config``. Files are written to a temporary name in the same folder, fsynced and
renamed, so a crash mid-write never leaves a truncated file under a checkpoint's name.

Checkpoints are data, never code: everything in one is a tensor or plain data (dicts, lists, tuples, strings,
numbers), and every read uses ``torch.load(..., weights_only=True)``, whose unpickler refuses any other type
before it is built. A file that holds anything else (e.g. an object whose unpickling would call ``os.system``) is
refused with a ``CheckpointError`` naming the type. The RNG states of numpy and ``random`` are stored as tensors
and numbers for that reason (``get_rng_state``); checkpoints written before that stored numpy's state as an
ndarray, which the loader accepts through a narrow allow-list (``_LEGACY_GLOBALS``).

``model`` holds the whole state dict (``train.checkpoint.state="full"``, the default) or, with
``train.checkpoint.state="trainable"``, everything but the frozen base (``model_state: "trainable"``): a LoRA
run's checkpoint is the adapters, not the foundation model. The frozen base is then named in ``frozen_base``:
``path`` (the local file it was loaded from, or None for a seeded random init), ``file_sha256`` (of that file),
``state_sha256`` (of the frozen tensors themselves) and ``num_tensors``; loading rebuilds the model from its
config and refuses, in one line naming the file, a base whose hashes differ.
"""
from __future__ import annotations

import hashlib
import logging
import os
import pickletools
import random
import re
import zipfile
from pathlib import Path
from typing import Any, Collection, Mapping

import numpy as np
import torch

from core.errors import CheckpointError  # noqa: F401  (re-exported: defined in core.errors since the SAM2 adapter)

logger = logging.getLogger(__name__)
_ITER_RE = re.compile(r"model_(\d+)\.pth$")


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


# Exactly what rebuilds the numpy RNG state of checkpoints written before RNG states became tensors: a uint32
# ndarray. An object array would also need numpy.dtypes.ObjectDType, which stays refused.
_LEGACY_GLOBALS = [np._core.multiarray._reconstruct, np.ndarray, np.dtype, np.dtypes.UInt32DType]
# What the weights-only unpickler takes besides the list above (torch types, OrderedDict), for naming the rest.
_SAFE_MODULES = ("torch", "collections")
_SAFE_NAMES = {f"{g.__module__}.{g.__qualname__}" for g in _LEGACY_GLOBALS} | {"_codecs.encode"}  # bytes, protocol 2


def load_checkpoint(path: str | Path) -> dict:
    """Load a checkpoint onto the CPU without running code: a missing, truncated or foreign file, or one that
    holds a pickled object other than tensors and plain data, raises ``CheckpointError`` (nothing is executed)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"Checkpoint not found: {path}")
    try:
        with torch.serialization.safe_globals(_LEGACY_GLOBALS):
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        unsafe = _unsafe_globals(path)
        if unsafe:
            raise CheckpointError(f"Checkpoint {path} contains a pickled object of type {unsafe[0]}; refusing to "
                                  f"load it (only tensors and plain data are accepted)") from None
        raise CheckpointError(f"Checkpoint {path} is corrupt or truncated ({type(e).__name__}: "
                              f"{str(e).splitlines()[0] if str(e) else ''})") from None
    if not isinstance(ckpt, dict) or "model" not in ckpt:
        raise CheckpointError(f"Checkpoint {path} is not a MedVidSeg checkpoint (no 'model' entry)")
    return ckpt


def _unsafe_globals(path: Path) -> list[str]:
    """Importable names (``module.name``) a pickle file refers to beyond tensors and plain data, read from its
    opcodes without unpickling anything. torch's own scan covers its zip format; older formats (a bare pickle,
    torch's pre-1.6 sequence of pickles) are walked with ``pickletools``, which torch does not offer."""
    try:
        if zipfile.is_zipfile(path):
            names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
        else:
            names = _pickle_globals(path)
    except Exception:  # an unreadable file: reported as corrupt by the caller
        return []
    return [n for n in names if n.split(".")[0] not in _SAFE_MODULES and n not in _SAFE_NAMES]


def _pickle_globals(path: Path) -> list[str]:
    """``module.name`` of every GLOBAL / STACK_GLOBAL opcode in the pickles of a file, in order. STACK_GLOBAL
    takes its two strings from the stack: they are the operands of the two ops before it, pushed directly or
    fetched from the memo (which MEMOIZE / PUT fill with the object just pushed)."""
    names: list[str] = []
    with open(path, "rb") as f:
        while f.peek(1)[:1]:
            pushed: list = []  # per op, the string it pushed (None: anything else)
            memo: dict = {}
            try:
                ops = list(pickletools.genops(f))
            except ValueError:  # not a pickle: torch's pre-1.6 format stores raw tensor bytes after its pickles
                break
            for op, arg, _ in ops:
                top = pushed[-1] if pushed else None
                if op.name == "MEMOIZE":
                    memo[len(memo)] = top
                elif op.name in ("BINPUT", "LONG_BINPUT", "PUT"):
                    memo[arg] = top
                elif op.name in ("BINGET", "LONG_BINGET", "GET"):
                    pushed.append(memo.get(arg))
                elif op.name == "GLOBAL":
                    names.append(arg.replace(" ", "."))
                    pushed.append(None)
                elif op.name == "STACK_GLOBAL":
                    if len(pushed) >= 2 and all(isinstance(v, str) for v in pushed[-2:]):
                        names.append(f"{pushed[-2]}.{pushed[-1]}")
                    pushed.append(None)
                else:
                    pushed.append(arg if isinstance(arg, str) and "UNICODE" in op.name else None)
    return names


def latest_valid_checkpoint(folder: str | Path) -> tuple[Path, dict] | None:
    """Newest loadable checkpoint; corrupt newer ones are skipped with a warning naming them."""
    for path in reversed(list_checkpoints(folder)):
        try:
            return path, load_checkpoint(path)
        except CheckpointError as e:
            logger.warning("Skipping unusable checkpoint: %s", e)
    return None


STATE_MODES = ("full", "trainable")  # train.checkpoint.state


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def state_sha256(state: Mapping[str, torch.Tensor]) -> str:
    """sha256 over the tensors of a state dict in key order: each key, dtype, shape and the raw bytes (on CPU)."""
    h = hashlib.sha256()
    for k in sorted(state):
        t = state[k].detach().cpu().contiguous()
        h.update(f"{k}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def frozen_base_record(state: Mapping[str, torch.Tensor], frozen_keys: Collection[str],
                       base_path: str | None) -> dict:
    """What names a frozen base in a trainable-only checkpoint (see the module docstring)."""
    frozen = {k: state[k] for k in frozen_keys}
    return {"path": str(base_path) if base_path else None,
            "file_sha256": file_sha256(base_path) if base_path else None,
            "state_sha256": state_sha256(frozen), "num_tensors": len(frozen)}


def checkpoint_model_state(state: dict, frozen_keys: Collection[str], base_path: str | None,
                           record: dict | None = None) -> tuple[dict, dict]:
    """(the state without the frozen keys, the frozen base's record); ``record`` given: reused (the base is
    frozen, so its hash is computed once per run)."""
    if record is None:
        record = frozen_base_record(state, frozen_keys, base_path)
    return {k: v for k, v in state.items() if k not in frozen_keys}, record


def check_frozen_base(ckpt: dict, path: str | Path, model_state: Mapping[str, torch.Tensor],
                      frozen_keys: Collection[str], base_path: str | None) -> None:
    """For a trainable-only checkpoint: the frozen base the model was built on now must be the one it was
    trained on (same file hash, same tensors); one line naming the files otherwise."""
    rec = ckpt.get("frozen_base") or {}
    if rec.get("path") and rec.get("file_sha256"):
        now_path = base_path or rec["path"]
        if not Path(now_path).is_file():
            raise CheckpointError(f"Checkpoint {path} holds only trainable parameters on the frozen base "
                                  f"{rec['path']}, which is not found (at {now_path})")
        now = file_sha256(now_path)
        if now != rec["file_sha256"]:
            raise CheckpointError(f"Checkpoint {path} was trained on the frozen base {rec['path']} with sha256 "
                                  f"{rec['file_sha256'][:12]}..., but {now_path} now has sha256 {now[:12]}...: "
                                  f"not the same base file")
    now = state_sha256({k: model_state[k] for k in frozen_keys})
    if rec.get("state_sha256") != now:
        base = f"the file {rec['path']}" if rec.get("path") else "a seeded random init (train.seed)"
        raise CheckpointError(f"Checkpoint {path} holds only trainable parameters, but the frozen base the model "
                              f"was built on (from {base}) differs from the one it was trained on: sha256 of "
                              f"the frozen tensors {now[:12]}... vs {str(rec.get('state_sha256'))[:12]}...")


def load_model_state(model: torch.nn.Module, ckpt: dict, path: str | Path, model_name: str,
                     frozen_keys: Collection[str] = (), base_path: str | None = None) -> None:
    """Check that ``ckpt`` fits ``model`` (:func:`check_model_matches`; a trainable-only one also its frozen
    base, :func:`check_frozen_base`) and load its weights."""
    check_model_matches(ckpt, path, model_name, model, frozen_keys)
    if ckpt.get("model_state", "full") == "trainable":
        check_frozen_base(ckpt, path, model.state_dict(), frozen_keys, base_path)
        model.load_state_dict(ckpt["model"], strict=False)  # the frozen keys stay as built (checked above)
    else:
        model.load_state_dict(ckpt["model"])


def check_model_matches(ckpt: dict, path: str | Path, model_name: str, model: torch.nn.Module,
                        frozen_keys: Collection[str] = ()) -> None:
    """Refuse a checkpoint of another model, naming both and the first mismatching keys (a trainable-only
    checkpoint must hold exactly the keys outside ``frozen_keys``)."""
    same = {model_name, *getattr(model, "checkpoint_names", ())}  # models that share a state dict (SAM2, SAMURAI)
    if ckpt.get("model_name") is not None and ckpt["model_name"] not in same:
        raise CheckpointError(f"Checkpoint {path} holds a {ckpt['model_name']!r} model, but the config builds "
                              f"{model_name!r}")
    own, theirs = model.state_dict(), ckpt["model"]
    if ckpt.get("model_state", "full") == "trainable":
        own = {k: v for k, v in own.items() if k not in set(frozen_keys)}
    missing = [k for k in own if k not in theirs]
    unexpected = [k for k in theirs if k not in own]
    shape = [k for k in own if k in theirs and tuple(own[k].shape) != tuple(theirs[k].shape)]
    explain = getattr(model, "checkpoint_mismatch", None)  # a model's own reason (UniverSeg: another width)
    problem = explain(theirs) if (missing or unexpected or shape) and callable(explain) else None
    if problem:
        raise CheckpointError(f"Checkpoint {path} does not fit model {model_name!r}: {problem}")
    if missing or unexpected or shape:
        raise CheckpointError(
            f"Checkpoint {path} does not fit model {model_name!r}: {len(missing)} missing keys {missing[:3]}, "
            f"{len(unexpected)} unexpected {unexpected[:3]}, {len(shape)} with other shapes {shape[:3]}")


def get_rng_state() -> dict:
    """The torch, numpy, ``random`` (and CUDA) generator states as tensors and numbers, so that a weights-only load
    restores them exactly (``set_rng_state``)."""
    np_state = np.random.get_state(legacy=False)  # {"bit_generator", "state": {"key", "pos"}, "has_gauss", "gauss"}
    version, internal, gauss_next = random.getstate()
    state = {"torch": torch.get_rng_state(),
             "numpy": {**np_state, "state": {"key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),
                                             "pos": int(np_state["state"]["pos"])}},
             "python": {"version": version, "internal": torch.tensor(internal, dtype=torch.int64),
                        "gauss_next": gauss_next}}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore what ``get_rng_state`` returned, or the tuples that checkpoints of earlier versions stored."""
    torch.set_rng_state(state["torch"])
    np_state = state["numpy"]
    if isinstance(np_state, dict):
        key = np_state["state"]["key"].numpy().astype(np.uint32)
        np_state = {**np_state, "state": {"key": key, "pos": np_state["state"]["pos"]}}
    np.random.set_state(np_state)
    py = state["python"]
    if isinstance(py, dict):
        py = (py["version"], tuple(py["internal"].tolist()), py["gauss_next"])
    random.setstate(py)
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
