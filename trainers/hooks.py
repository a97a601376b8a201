"""Trainer hooks: everything optional in training (logging, evaluation, checkpoints, EMA) lives here.

A hook subclasses :class:`HookBase` and overrides any of

    before_train()   once, before the first iteration of this process (after a resume: of the resumed part)
    before_step()    before each iteration (``trainer.iter`` = the 0-based iteration about to run)
    after_step()     after each iteration; ``trainer.step_outcome`` says what happened to the update:
                     "taken", "amp_skipped" (the fp16 GradScaler skipped optimizer.step) or "dropped"
                     (non-finite loss under train.nonfinite.policy=skip); ``trainer.step_scalars`` holds the
                     step's logged scalars (a hook may add to them before the LoggingHook reads them)
    after_train()    once, after the last iteration

and, when its state must survive a restart, ``state_dict / load_state_dict`` (stored in checkpoints under
``hooks.<ClassName>``, a second hook of one class under ``<ClassName>#2``, ...). After step ``i`` the trainer has
completed ``i + 1`` iterations. ``hook.trainer`` is a weak proxy to the trainer, set when it is registered.

Where hooks come from (``Trainer.__init__``): the built-in ones (logging, evaluation, best and periodic
checkpoints), those the model contributes (``MetaArch.hooks()``), then ``train.hooks`` entries of the config,
built from the ``HOOKS`` registry, e.g. ``train = dict(hooks=[dict(name="EMAHook", pairs={"teacher": "student"},
momentum=0.99)])``; code that builds a trainer adds its own with ``Trainer.register_hooks``. They run in order of ``priority`` (lower first,
ties in that order): a hook that changes the model (EMA: 10) runs before the default 50, and the logging,
evaluation and checkpoint hooks (90) run last, so they see the model and scalars after every other hook's step.
"""
from __future__ import annotations

import datetime
import logging
import math
import time
from collections import defaultdict

import torch

from core import comm
from core.checkpoint import list_checkpoints, save_atomic
from core.errors import ConfigError
from core.registry import HOOKS, did_you_mean
from models.losses.dino import cosine_schedule, ema_update

logger = logging.getLogger(__name__)


class HookBase:
    trainer = None  # weakref proxy set by the trainer
    priority = 50   # lower runs first (see the module docstring)

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
    priority = 90

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
    priority = 90

    def __init__(self, period: int):
        self.period = period

    def after_step(self):
        if self.period >= 0 and self._due(self.period):  # 0: only after the last iteration; < 0: never
            self.trainer.run_evaluation()


@HOOKS.register()
class BestCheckpointer(HookBase):
    """Keep ``model_best.pth`` for the best value of ``metric`` (``<dataset>/<metric>``, first eval dataset by
    default) seen at an evaluation."""
    priority = 90

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
    priority = 90

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



@HOOKS.register()
class EMAHook(HookBase):
    """An exponential moving average of modules of the model: after every optimizer step that was taken,
    ``teacher <- m·teacher + (1 − m)·student`` parameter by parameter (buffers copied), with ``m`` on a half
    cosine from ``momentum`` (iteration 0) to ``momentum_final`` (``train.max_iter``), as DINO's teacher. Steps
    the fp16 GradScaler skipped or that were dropped for a non-finite loss do not move it.

    pairs: ``{teacher module: student module}``, module paths within the trainer's model (``""`` = the model),
        e.g. ``{"teacher": "student", "teacher_head": "student_head"}`` (LGSD); in code also a list of
        ``(teacher, student)`` modules. Each teacher must have the student's parameters and buffers, in order.
    scalar_prefix: logs ``<prefix>_momentum`` every step whose update was not dropped.
    progress: optional ``f(iteration, max_iter)`` called before each step (the 0-based iteration): lets the model
        run its own schedules on the trainer's clock (LGSD's teacher temperature).
    scalars: optional ``f() -> {name: value}`` logged after ``<prefix>_momentum``.

    The teachers live in the model (so checkpoints hold them) and the momentum is a function of the iteration,
    so the hook itself has no state to save."""

    priority = 10

    def __init__(self, pairs, momentum: float = 0.999, momentum_final: float = 1.0, scalar_prefix: str = "ema",
                 progress=None, scalars=None):
        if not 0.0 <= momentum <= 1.0 or not 0.0 <= momentum_final <= 1.0:
            raise ConfigError(f"EMAHook momentum and momentum_final must lie in [0, 1], got {momentum}, "
                              f"{momentum_final}")
        self.pairs = list(pairs.items()) if isinstance(pairs, dict) else list(pairs)
        if not self.pairs:
            raise ConfigError("EMAHook needs at least one (teacher, student) pair")
        self.start, self.end, self.prefix = momentum, momentum_final, scalar_prefix
        self.progress, self.scalars = progress, scalars
        self.momentum = momentum
        self._modules = None

    def _resolve(self):
        model = self.trainer.model
        out = []
        for teacher, student in self.pairs:
            t, s = (_submodule(model, m) if isinstance(m, str) else m for m in (teacher, student))
            if [p.shape for p in t.parameters()] != [p.shape for p in s.parameters()]:
                raise ConfigError(f"EMAHook: {teacher!r} and {student!r} do not have the same parameters")
            out.append((t, s))
        return out

    def before_train(self):
        self._modules = self._resolve()

    def before_step(self):
        t = self.trainer
        self.momentum = cosine_schedule(self.start, self.end, t.iter, t.max_iter)
        if self.progress is not None:
            self.progress(t.iter, t.max_iter)

    def after_step(self):
        t = self.trainer
        if t.step_outcome == "taken":
            with torch.no_grad():
                for teacher, student in self._modules:
                    ema_update(teacher, student, self.momentum)
        if t.step_outcome != "dropped":
            t.step_scalars.update({f"{self.prefix}_momentum": self.momentum,
                                   **(self.scalars() if self.scalars is not None else {})})


def _submodule(model, path: str):
    try:
        return model.get_submodule(path)
    except AttributeError:
        names = [n for n, _ in model.named_modules() if n and n.count(".") <= path.count(".")]
        raise ConfigError(f"EMAHook: the model has no module {path!r}; {did_you_mean(path, names)}") from None
