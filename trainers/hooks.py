"""Trainer hooks: everything optional in training (logging, evaluation, checkpoints) lives here.

A hook has ``before_train / after_train / before_step / after_step`` and, when its state must survive a restart,
``state_dict / load_state_dict`` (stored in checkpoints under ``hooks.<ClassName>``). ``trainer.iter`` is the
0-based iteration being run; after step ``i`` the trainer has completed ``i + 1`` iterations.
"""
from __future__ import annotations

import datetime
import logging
import math
import time
from collections import defaultdict

from core import comm
from core.checkpoint import list_checkpoints, save_atomic
from core.errors import ConfigError
from core.registry import HOOKS

logger = logging.getLogger(__name__)


class HookBase:
    trainer = None  # weakref proxy set by the trainer

    def before_train(self): ...
    def after_train(self): ...
    def before_step(self): ...
    def after_step(self): ...

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass

    def _due(self, period: int) -> bool:
        done = self.trainer.iter + 1
        return done == self.trainer.max_iter or (period > 0 and done % period == 0)


@HOOKS.register()
class LoggingHook(HookBase):
    """Console progress with ETA every ``period`` iterations (mean of the window), and the same scalars to every
    writer (metrics.jsonl, TensorBoard, wandb)."""

    def __init__(self, period: int = 20):
        self.period = period
        self._window: dict[str, list[float]] = defaultdict(list)

    def before_train(self):
        self._t0, self._start_iter = time.perf_counter(), self.trainer.iter

    def after_step(self):
        for k, v in self.trainer.step_scalars.items():
            self._window[k].append(v)
        if not self._due(self.period):
            return
        t = self.trainer
        scalars = {k: sum(v) / len(v) for k, v in self._window.items()}
        self._window.clear()
        done = t.iter + 1
        avg = (time.perf_counter() - self._t0) / max(done - self._start_iter, 1)
        eta = datetime.timedelta(seconds=int(avg * (t.max_iter - done)))
        scalars["lr"] = t.step_scalars["lr"]  # LR of the last step, not a window mean
        losses = "  ".join(f"{k} {v:.4f}" for k, v in scalars.items() if k.startswith("loss"))
        logger.info(f"iter {done}/{t.max_iter}  {losses}  lr {scalars['lr']:.2e}  "
                    f"{scalars['time']:.3f} s/it (data {scalars['data_time']:.3f})  eta {eta}")
        t.write_scalars(done, scalars)


@HOOKS.register()
class EvalHook(HookBase):
    """Evaluate every ``period`` iterations and after the last one; results go to the writers as
    ``<dataset>/<metric>`` and to ``trainer.latest_eval``."""

    def __init__(self, period: int):
        self.period = period

    def after_step(self):
        if self.period >= 0 and self._due(self.period):  # 0: only after the last iteration; < 0: never
            self.trainer.run_evaluation()


@HOOKS.register()
class BestCheckpointer(HookBase):
    """Keep ``model_best.pth`` for the best value of ``metric`` (``<dataset>/<metric>``, first eval dataset by
    default) seen at an evaluation."""

    def __init__(self, metric: str, mode: str = "max"):
        if mode not in ("max", "min"):
            raise ConfigError(f"train.best_checkpoint.mode must be 'max' or 'min', got {mode!r}")
        self.metric, self.mode = metric, mode
        self.best: float | None = None
        self.best_iter: int | None = None
        self._seen_eval = None

    def after_step(self):
        t = self.trainer
        if not t.latest_eval or t.latest_eval is self._seen_eval:  # nothing evaluated (or data.evaluate empty)
            return
        self._seen_eval = t.latest_eval
        flat = {f"{ds}/{k}": v for ds, res in t.latest_eval.items() for k, v in res.items()}
        key = self.metric if "/" in self.metric else f"{next(iter(t.latest_eval))}/{self.metric}"
        if key not in flat:
            raise ConfigError(f"train.best_checkpoint.metric {self.metric!r}: no such metric; have {sorted(flat)}")
        value = flat[key]
        better = self.best is None or (value > self.best if self.mode == "max" else value < self.best)
        if better and math.isfinite(value):
            self.best, self.best_iter = value, t.iter + 1
            if comm.is_main_process():
                save_atomic(t.checkpoint_state(), t.ckpt_dir / "model_best.pth")
            logger.info(f"New best {key} = {value:.4f} at iteration {self.best_iter}: saved model_best.pth")

    def state_dict(self):
        return {"best": self.best, "best_iter": self.best_iter}

    def load_state_dict(self, state):
        self.best, self.best_iter = state.get("best"), state.get("best_iter")


@HOOKS.register()
class PeriodicCheckpointer(HookBase):
    """Save ``model_<iter>.pth`` every ``period`` iterations (keeping the newest ``keep_last``; 0 keeps all) and
    ``model_final.pth`` after the last iteration."""

    def __init__(self, period: int, keep_last: int = 0):
        self.period, self.keep_last = period, keep_last

    def after_step(self):
        t = self.trainer
        done = t.iter + 1
        if not comm.is_main_process():
            return
        if done == t.max_iter:
            path = save_atomic(t.checkpoint_state(), t.ckpt_dir / "model_final.pth")
            logger.info(f"Saved {path}")
        elif self.period > 0 and done % self.period == 0:
            path = save_atomic(t.checkpoint_state(), t.ckpt_dir / f"model_{done:07d}.pth")
            logger.info(f"Saved {path}")
            if self.keep_last > 0:
                periodic = [p for p in list_checkpoints(t.ckpt_dir) if p.name != "model_final.pth"]
                for old in periodic[: -self.keep_last]:
                    old.unlink()

