"""The training loop: one readable ``for`` loop over iterations; everything optional is a hook.

    for iter in range(start_iter, max_iter):
        before_step hooks -> run_step (data, forward, backward, clip, step, LR) -> after_step hooks

The trainer knows how to run a step, save/restore its state and evaluate; writers, evaluation and checkpoints
are hooks (``trainers/hooks.py``). DDP comes from torch.distributed (torchrun); nothing here reads env vars.
"""
from __future__ import annotations

import contextlib
import logging
import math
import time
import weakref
from collections.abc import Mapping
from pathlib import Path

import torch
from omegaconf import OmegaConf

from core import comm
from core.catalog import BadData
from core.checkpoint import (STATE_MODES, CheckpointError, checkpoint_model_state, get_rng_state,
                             load_model_state, remove_stale_temp_files, set_rng_state)
from core.config import config_to_container
from core.errors import ConfigError, TrainingError
from core.events import JSONWriter, TensorboardWriter, WandbWriter
from core.registry import HOOKS, MODELS, build
from core.structures import to_device
from data_schedule.build import build_train_loader
from models.base import MetaArch, check_batch
from trainers.build import build_optimizer, build_scheduler
from trainers.evaluation import autocast_context, evaluate_all
from trainers.hooks import BestCheckpointer, EvalHook, HookBase, LoggingHook, PeriodicCheckpointer

logger = logging.getLogger(__name__)


def build_model(cfg, device: torch.device) -> MetaArch:
    """``cfg.model`` built from the ``MODELS`` registry, on ``device``; it must follow the model protocol."""
    model = build(MODELS, cfg.model)
    if not isinstance(model, MetaArch):
        raise ConfigError(f"model {cfg.model.name!r} is a {type(model).__name__}, not a models.base.MetaArch: "
                          f"derive the class from MetaArch (the protocol the trainer and evaluation use)")
    return model.to(device)


def load_model(cfg, device: torch.device, ckpt: dict | None = None, path: str | Path | None = None) -> MetaArch:
    """The model of ``cfg`` on ``device``, built after seeding with ``train.seed`` as the trainer builds it (so a
    randomly initialised frozen base is the one training used), with the weights of ``ckpt`` (read from
    ``path``; the whole state or, ``train.checkpoint.state="trainable"``, the trained part on a checked frozen
    base) if given."""
    torch.manual_seed(int(cfg.train.seed))
    model = build_model(cfg, device)
    if ckpt is not None:
        load_model_state(model, ckpt, path, cfg.model.name, model.frozen_state_keys(), model.frozen_base_path)
    return model


def default_device() -> torch.device:
    return torch.device("cuda", comm.get_local_rank()) if torch.cuda.is_available() else torch.device("cpu")


class Trainer:
    def __init__(self, cfg, run_dir: str | Path):
        self.cfg, self.run_dir = cfg, Path(run_dir)
        self.ckpt_dir = self.run_dir / "checkpoints"
        tc = cfg.train
        self.max_iter, self.accum = int(tc.max_iter), int(tc.grad_accum)
        if self.max_iter <= 0 or self.accum <= 0:
            raise ConfigError(f"train.max_iter and train.grad_accum must be positive, got {self.max_iter}, "
                              f"{self.accum}")
        self.device = default_device()
        torch.manual_seed(tc.seed + comm.get_rank())  # seeded per rank
        self.model = build_model(cfg, self.device)
        if not self.model.trains:
            raise ConfigError(f"model {cfg.model.name!r} does not train (trains=False); evaluate it with "
                              f"--trainer_mode eval --config_file <config> (no --eval_path needed)")
        if tc.checkpoint.state not in STATE_MODES:
            raise ConfigError(f"train.checkpoint.state must be one of {list(STATE_MODES)}, got "
                              f"{tc.checkpoint.state!r}")
        self.frozen_keys = self.model.frozen_state_keys()
        self._frozen_base: dict | None = None  # its record (hashes), computed at the first trainable-only save
        self.ddp_model = self.model
        if comm.get_world_size() > 1:
            self.ddp_model = torch.nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=bool(tc.get("find_unused_parameters", False)))
        self.optimizer = build_optimizer(self.model, cfg.optim)
        self.scheduler = build_scheduler(self.optimizer, cfg.optim.scheduler, self.max_iter)
        use_scaler = self.device.type == "cuda" and tc.amp.enabled and tc.amp.dtype == "float16"
        self.scaler = torch.amp.GradScaler("cuda", enabled=use_scaler)
        self.iter = self.start_iter = 0
        self.rng_state: dict | None = None
        self.latest_eval: dict | None = None
        self.step_scalars: dict[str, float] = {}
        self.step_outcome = "taken"  # of the last step: "taken", "amp_skipped" or "dropped" (see trainers/hooks.py)
        self.skipped_steps = 0  # non-finite steps dropped under train.nonfinite.policy=skip
        self.amp_skipped_steps = 0  # steps the fp16 GradScaler skipped (inf/NaN gradients)
        self.skipped_samples, self.bad_files = 0, set()  # under data.bad_sample_policy=skip
        if tc.nonfinite.policy not in ("error", "skip"):
            raise ConfigError(f"train.nonfinite.policy must be 'error' or 'skip', got {tc.nonfinite.policy!r}")
        self.writers: list = []
        self.hooks: list[HookBase] = []
        self._hook_states: dict = {}  # hook states of the checkpoint resumed from (for hooks registered later)
        self.register_hooks(self._default_hooks() + list(self.model.hooks()) + list(tc.get("hooks") or []))

    # ---- hooks ------------------------------------------------------------------------------------------
    def _default_hooks(self) -> list[HookBase]:
        tc = self.cfg.train
        hooks = [LoggingHook(tc.log_period), EvalHook(tc.eval_period)]
        if tc.best_checkpoint is not None and tc.best_checkpoint.get("metric"):  # best_checkpoint=null: off too
            hooks.append(BestCheckpointer(tc.best_checkpoint.metric, tc.best_checkpoint.mode))
        hooks.append(PeriodicCheckpointer(tc.checkpoint_period, tc.keep_last))
        return hooks

    def register_hooks(self, hooks: list) -> None:
        """Add hooks (``HookBase`` instances, or ``dict(name=..., ...)`` entries of the ``HOOKS`` registry) to the
        trainer's; all run in order of ``priority`` (ties: registration order). A hook registered after
        ``load_checkpoint_state`` still gets its saved state."""
        for i, h in enumerate(hooks):
            if isinstance(h, Mapping) or OmegaConf.is_dict(h):
                h = build(HOOKS, h, key=f"train.hooks[{i}]")
            if not isinstance(h, HookBase):
                raise ConfigError(f"hook {i} ({type(h).__name__}) is not a trainers.hooks.HookBase nor a "
                                  f"dict(name=<HOOKS entry>, ...)")
            h.trainer = weakref.proxy(self)
            self.hooks.append(h)
            key = self._hook_keys()[-1]
            if key in self._hook_states:
                h.load_state_dict(self._hook_states[key])
        self.hooks.sort(key=lambda h: h.priority)  # stable: ties keep their registration order

    def _hook_keys(self) -> list[str]:
        """Checkpoint keys of the hooks' states: the class name, ``<name>#2`` for a second hook of one class."""
        seen: dict[str, int] = {}
        keys = []
        for h in self.hooks:
            name = type(h).__name__
            seen[name] = seen.get(name, 0) + 1
            keys.append(name if seen[name] == 1 else f"{name}#{seen[name]}")
        return keys

    def _call(self, stage: str) -> None:
        for h in self.hooks:
            getattr(h, stage)()

    # ---- state --------------------------------------------------------------------------------------------
    def checkpoint_state(self) -> dict:
        """Everything needed to continue exactly after the current iteration."""
        done = self.iter + 1
        state = {
            "model": self._model_state(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "iteration": done,
            "rng": get_rng_state(),
            "sampler": {"consumed": done * self.accum * self.per_rank_batch, "seed": int(self.cfg.train.seed),
                        "world_size": comm.get_world_size()},
            "hooks": dict(zip(self._hook_keys(), (h.state_dict() for h in self.hooks))),
            "skipped_steps": self.skipped_steps,
            "amp_skipped_steps": self.amp_skipped_steps,
            "model_name": self.cfg.model.name,
            "config": config_to_container(self.cfg),  # plain data; `+key`s keep their mark
        }
        if self.cfg.train.checkpoint.state == "trainable":
            state.update(model_state="trainable", frozen_base=self._frozen_base)
        return state

    def _model_state(self) -> dict:
        """The model's state dict; with ``train.checkpoint.state="trainable"`` without the frozen base, whose
        record (local path, sha256 of the file and of the frozen tensors) is computed once: it never changes."""
        if self.cfg.train.checkpoint.state != "trainable":
            return self.model.state_dict()
        state, self._frozen_base = checkpoint_model_state(self.model.state_dict(), self.frozen_keys,
                                                          self.model.frozen_base_path, self._frozen_base)
        return state

    def checkpoint_bytes(self) -> int:
        """About the size of one checkpoint: the saved model state plus two optimizer moments per trainable
        parameter (AdamW's; SGD with momentum keeps one)."""
        saved = sum(t.numel() * t.element_size() for k, t in self.model.state_dict().items()
                    if self.cfg.train.checkpoint.state != "trainable" or k not in self.frozen_keys)
        return saved + 2 * sum(p.numel() * p.element_size() for _, p in self.model.trainable_parameters())

    def load_checkpoint_state(self, ckpt: dict, path: str | Path) -> None:
        load_model_state(self.model, ckpt, path, self.cfg.model.name, self.frozen_keys)
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.scaler.load_state_dict(ckpt["scaler"])
        self.start_iter = self.iter = int(ckpt["iteration"])
        saved_world = ckpt.get("sampler", {}).get("world_size", comm.get_world_size())
        if saved_world != comm.get_world_size():
            raise CheckpointError(f"Checkpoint {path} was written by {saved_world} processes; resuming with "
                                  f"{comm.get_world_size()} would change the data order")
        self.rng_state = ckpt["rng"]
        self.skipped_steps = int(ckpt.get("skipped_steps", 0))
        self.amp_skipped_steps = int(ckpt.get("amp_skipped_steps", 0))
        self._hook_states = ckpt.get("hooks", {})
        for key, h in zip(self._hook_keys(), self.hooks):
            h.load_state_dict(self._hook_states.get(key, {}))
        logger.info(f"Resumed from {path} at iteration {self.start_iter}")

    @property
    def per_rank_batch(self) -> int:
        return int(self.cfg.train.batch_size) // comm.get_world_size()

    # ---- writers ------------------------------------------------------------------------------------------
    def _open_writers(self) -> None:
        if not comm.is_main_process():
            return
        log = self.cfg.log
        resume_from = self.start_iter if self.start_iter > 0 else None
        self.writers.append(JSONWriter(self.run_dir / "metrics.jsonl", resume_from))
        if log.tensorboard:
            self.writers.append(TensorboardWriter(self.run_dir / "tensorboard", resume_from))
        if log.wandb.enabled:
            id_file = self.run_dir / "wandb_id.txt"
            run_id = id_file.read_text().strip() if id_file.exists() else None
            w = WandbWriter(self.run_dir, OmegaConf.to_container(self.cfg, resolve=True), log.wandb.project,
                            log.wandb.mode, name=self.run_dir.name, resume_id=run_id)
            id_file.write_text(w.run.id)
            self.writers.append(w)

    def write_scalars(self, iteration: int, scalars: dict[str, float]) -> None:
        for w in self.writers:
            w.write(iteration, scalars)

    # ---- the loop -----------------------------------------------------------------------------------------
    def train(self) -> None:
        if self.start_iter >= self.max_iter:
            logger.info(f"Nothing to do: already at iteration {self.start_iter} of train.max_iter={self.max_iter}")
            return
        dc = self.cfg.data
        loader = build_train_loader(list(dc.train), dc.train_mapper, int(self.cfg.train.batch_size),
                                    int(dc.num_workers), int(self.cfg.train.seed),
                                    start=self.start_iter * self.accum * self.per_rank_batch,
                                    skip_bad=dc.bad_sample_policy == "skip")
        self._data = iter(loader)
        self._unlabeled = self._unlabeled_loader()
        if comm.is_main_process():
            remove_stale_temp_files(self.ckpt_dir)
        if self.rng_state is not None:
            set_rng_state(self.rng_state)  # after building the loader: exactly where the checkpoint left off
        self._open_writers()
        self.model.train()
        logger.info(f"Training from iteration {self.start_iter} to {self.max_iter} on {self.device} "
                    f"({comm.get_world_size()} process(es), batch {self.cfg.train.batch_size} total)")
        try:
            self.iter = self.start_iter
            self._call("before_train")
            for self.iter in range(self.start_iter, self.max_iter):
                self._call("before_step")
                self.run_step()
                self._call("after_step")
            self._call("after_train")
            self._report_skipped()
        finally:
            for w in self.writers:
                w.close()
            self.writers = []

    def _unlabeled_loader(self):
        """Endless iterator over unlabelled batches (``data.unlabeled``: names, mapper, ratio = unlabelled clips
        per labelled clip), or None. Its own stream (seed + 1), resumed at the same iteration as the labelled one."""
        ul = self.cfg.data.get("unlabeled")
        needs = "unlabeled" in self.model.requires
        if not ul or not float(ul.get("ratio", 0)):
            if needs:
                raise ConfigError(f"model {self.cfg.model.name!r} trains on unlabelled clips: set data.unlabeled "
                                  f"(names, mapper, ratio > 0), e.g. as in configs/cardiac/lgrnet_tiny_lgsd.py")
            return None
        total = round(float(ul.ratio) * int(self.cfg.train.batch_size))
        if total < 1:
            raise ConfigError(f"data.unlabeled.ratio={ul.ratio} × train.batch_size={self.cfg.train.batch_size} "
                              f"rounds to 0 unlabelled clips per step; use a larger ratio")
        per_rank = total // comm.get_world_size()
        loader = build_train_loader(list(ul.names), ul.mapper, total, int(self.cfg.data.num_workers),
                                    int(self.cfg.train.seed) + 1, start=self.start_iter * self.accum * per_rank,
                                    skip_bad=self.cfg.data.bad_sample_policy == "skip",
                                    what=f"data.unlabeled.ratio × train.batch_size = {total}")
        return iter(loader)

    def run_step(self) -> None:
        tc = self.cfg.train
        t0 = time.perf_counter()
        data_time, totals = 0.0, {}
        # under the skip policy a dropped step must not leave its mark in buffers (e.g. BatchNorm statistics)
        buffers = ({k: b.clone() for k, b in self.model.named_buffers()}
                   if tc.nonfinite.policy == "skip" else None)
        for micro in range(self.accum):
            td = time.perf_counter()
            batch = to_device(next(self._data), self.device)
            if self._unlabeled is not None:
                batch["unlabeled"] = to_device(next(self._unlabeled), self.device)
            self._count_skipped(batch)
            check_batch(self.model, batch, training=True)
            data_time += time.perf_counter() - td
            last = micro == self.accum - 1
            sync = self.ddp_model.no_sync() if (self.ddp_model is not self.model and not last) \
                else contextlib.nullcontext()
            with sync:
                with autocast_context(self.device, tc.amp):
                    losses = self.ddp_model(batch)
                loss = sum(losses.values())
                self.scaler.scale(loss / self.accum).backward()
            for k, v in losses.items():
                totals[k] = totals.get(k, 0.0) + float(v.detach()) / self.accum
        total = sum(totals.values())
        if self.ddp_model is not self.model:  # every rank must take the same decision
            flag = torch.tensor([0.0 if math.isfinite(total) else 1.0], device=self.device)
            torch.distributed.all_reduce(flag)
            finite = flag.item() == 0
        else:
            finite = math.isfinite(total)
        group = self.optimizer.param_groups[0]
        lr = group["lr"] / group.get("lr_mult", 1.0)  # base LR of this step (before multipliers)
        if not finite:
            self.step_outcome = "dropped"
            self._nonfinite_step(totals)
            with torch.no_grad():
                for k, b in self.model.named_buffers():
                    b.copy_(buffers[k])
            self.step_scalars = {"loss": total, **totals, "lr": lr, "time": time.perf_counter() - t0,
                                 "data_time": data_time, "skipped_steps": self.skipped_steps}
            return
        self.scaler.unscale_(self.optimizer)
        if tc.clip_grad.max_norm:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), tc.clip_grad.max_norm,
                                           norm_type=tc.clip_grad.norm_type)
        scale = self.scaler.get_scale()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        # The fp16 GradScaler skips optimizer.step() when the scaled gradients hold inf/NaN, and then lowers its
        # scale (the sign it gives; a disabled scaler always reports 1.0): hooks must not treat it as taken
        # (an EMA teacher must not move).
        self.step_outcome = "amp_skipped" if self.scaler.get_scale() < scale else "taken"
        if self.step_outcome == "amp_skipped":
            self.amp_skipped_steps += 1
        self.scheduler.step()
        self.step_scalars = {"loss": total, **totals, "lr": lr, "time": time.perf_counter() - t0,
                             "data_time": data_time}
        if self.skipped_steps:
            self.step_scalars["skipped_steps"] = self.skipped_steps
        if self.amp_skipped_steps:
            self.step_scalars["amp_skipped_steps"] = self.amp_skipped_steps

    def _count_skipped(self, batch: dict) -> None:
        """Log each bad training file once (data.bad_sample_policy=skip) and count the replaced samples."""
        for skipped in batch.get("skipped", []):
            for path, reason in skipped:
                self.skipped_samples += 1
                if path not in self.bad_files:
                    self.bad_files.add(path)
                    logger.warning(f"Skipped a bad training sample from {path}: {reason}")

    def _nonfinite_step(self, totals: dict[str, float]) -> None:
        """Policy for a non-finite loss (``train.nonfinite``): "error" stops (the last checkpoint is untouched);
        "skip" drops this step's update (weights and optimizer state unchanged, the LR schedule moves on)
        and stops once more than ``max_skips`` steps were dropped."""
        policy = self.cfg.train.nonfinite
        terms = ", ".join(f"{k}={v:.4g}" for k, v in totals.items())
        where = f"Non-finite loss at iteration {self.iter + 1}: {terms}"
        if policy.policy != "skip":
            raise TrainingError(f"{where}; last good checkpoint left in {self.ckpt_dir} "
                                f"(train.nonfinite.policy=skip drops such steps instead)")
        self.skipped_steps += 1
        if self.skipped_steps > policy.max_skips:
            raise TrainingError(f"{where}; {self.skipped_steps} steps skipped, more than "
                                f"train.nonfinite.max_skips={policy.max_skips}")
        logger.warning(f"{where}; step skipped ({self.skipped_steps} so far)")
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()

    def _report_skipped(self) -> None:
        skipped = BadData.skipped
        if skipped or self.skipped_samples:
            logger.warning(f"Bad data skipped (data.bad_sample_policy=skip): {len(skipped)} video(s) left out of "
                           f"the training lists, {self.skipped_samples} training sample(s) replaced "
                           f"({len(self.bad_files)} file(s)): "
                           f"{', '.join(sorted({p for p, _ in skipped} | self.bad_files))}")

    def run_evaluation(self) -> dict:
        done = self.iter + 1
        results = evaluate_all(self.model, self.cfg, self.run_dir / "eval", self.device,
                               extra_info={"iteration": done})
        self.latest_eval = results
        self.write_scalars(done, {f"{ds}/{k}": v for ds, res in results.items() for k, v in res.items()
                                  if isinstance(v, (int, float))})
        return results
