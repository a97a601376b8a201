"""Metric writers: ``metrics.jsonl`` (one JSON object per log event), TensorBoard, wandb (offline by default).

Every writer takes ``write(iteration, scalars: dict[str, float])`` and ``close()``; only rank 0 creates them.
"""
from __future__ import annotations

import json
import logging
import math
from pathlib import Path

logger = logging.getLogger(__name__)


class JSONWriter:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._f = open(self.path, "a")

    def write(self, iteration: int, scalars: dict[str, float]) -> None:
        row = {"iteration": iteration, **{k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                                          for k, v in scalars.items()}}
        self._f.write(json.dumps(row, sort_keys=False) + "\n")
        self._f.flush()

    def close(self) -> None:
        self._f.close()


class TensorboardWriter:
    def __init__(self, log_dir: str | Path):
        from torch.utils.tensorboard import SummaryWriter

        self._w = SummaryWriter(str(log_dir))

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
