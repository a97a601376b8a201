"""Metric writers: ``metrics.jsonl`` (one JSON object per log event), TensorBoard, wandb (offline by default).

Every writer takes ``write(iteration, scalars: dict[str, float])`` and ``close()``; only rank 0 creates them.
"""
from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path

logger = logging.getLogger(__name__)


class JSONWriter:
    """Appends to ``metrics.jsonl``. ``resume_from`` drops rows past that iteration (and a half-written last line
    from a killed process), so a resumed run's file equals an uninterrupted run's."""

    def __init__(self, path: str | Path, resume_from: int | None = None):
        self.path = Path(path)
        if resume_from is not None and self.path.exists():
            truncate_jsonl(self.path, resume_from)
        self._f = open(self.path, "a")

    def write(self, iteration: int, scalars: dict[str, float]) -> None:
        row = {"iteration": iteration, **{k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                                          for k, v in scalars.items()}}
        self._f.write(json.dumps(row, sort_keys=False) + "\n")
        self._f.flush()

    def close(self) -> None:
        self._f.close()


def truncate_jsonl(path: Path, last_iteration: int) -> int:
    """Keep rows with ``iteration <= last_iteration`` (atomic rewrite); returns the number of rows dropped."""
    kept, dropped = [], 0
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:  # a line cut short by a kill
            dropped += 1
            continue
        if row.get("iteration", 0) <= last_iteration:
            kept.append(line)
        else:
            dropped += 1
    if dropped:
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text("".join(line + "\n" for line in kept))
        os.replace(tmp, path)
        logger.info(f"Resume: dropped {dropped} row(s) past iteration {last_iteration} from {path}")
    return dropped


class TensorboardWriter:
    def __init__(self, log_dir: str | Path, resume_from: int | None = None):
        from torch.utils.tensorboard import SummaryWriter

        # purge_step hides events past the resumed iteration that a killed run had written
        self._w = SummaryWriter(str(log_dir), purge_step=None if resume_from is None else resume_from + 1)

    def write(self, iteration: int, scalars: dict[str, float]) -> None:
        for k, v in scalars.items():
            if isinstance(v, (int, float)):
                self._w.add_scalar(k, v, iteration)
        self._w.flush()

    def close(self) -> None:
        self._w.close()


class WandbWriter:
    """wandb run in ``<run>/wandb``; ``mode="offline"`` by default (nothing leaves the machine; sync later with
    ``wandb sync``)."""

    def __init__(self, run_dir: str | Path, config: dict, project: str, mode: str = "offline",
                 name: str | None = None, resume_id: str | None = None):
        import wandb

        self._wandb = wandb
        self.run = wandb.init(project=project, dir=str(run_dir), mode=mode, config=config, name=name,
                              id=resume_id, resume="allow" if resume_id else None,
                              settings=wandb.Settings(silent=True, console="off"))

    def write(self, iteration: int, scalars: dict[str, float]) -> None:
        self.run.log({k: v for k, v in scalars.items() if isinstance(v, (int, float))}, step=iteration)

    def close(self) -> None:
        self.run.finish()
