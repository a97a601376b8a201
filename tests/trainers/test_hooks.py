"""Trainer hooks beyond the built-in ones: ``train.hooks`` entries built from the ``HOOKS`` registry (unknown names
suggest the closest), ``Trainer.register_hooks``, the order by priority, hook state in checkpoints across a
resume, and the EMAHook's errors."""
from __future__ import annotations

import json

import pytest
import torch

import main as cli
from core.checkpoint import load_checkpoint
from core.config import load_config
from core.errors import ConfigError
from core.registry import HOOKS
from tests.conftest import TINY_OVERRIDES, crash_at
from trainers.hooks import EMAHook, HookBase
from trainers.train_loop import Trainer


class CountingHook(HookBase):
    """Counts the steps it has seen (state that must survive a restart) and logs the count."""

    def __init__(self, tag: str = "a"):
        self.tag, self.steps = tag, 0

    def after_step(self):
        self.steps += 1
        self.trainer.step_scalars[f"count_{self.tag}"] = self.steps

    def state_dict(self):
        return {"steps": self.steps}

    def load_state_dict(self, state):
        self.steps = state.get("steps", 0)


@pytest.fixture
def hook_config(tmp_path, tiny_config):
    HOOKS.register(CountingHook)
    path = tmp_path / "hooked.py"
    path.write_text(f'_base_ = ["{tiny_config}"]\n'
                    'train = dict(hooks=[dict(name="CountingHook", tag="a"), dict(name="CountingHook", tag="b")])\n')
    yield path
    HOOKS._obj_map.pop("CountingHook")


def _run(config, out, *extra, mode="train_attmpt"):
    return cli.main(["--config_file", str(config), "--trainer_mode", mode, "--output_dir", str(out),
                     *TINY_OVERRIDES, "train.eval_period=-1", "train.max_iter=3", "train.checkpoint_period=1",
                     *extra])


def test_config_hooks_run_before_logging_and_keep_their_state_across_a_resume(synth_root, hook_config, tmp_path,
                                                                            monkeypatch):
    out = tmp_path / "run"
    with crash_at(monkeypatch, 2), pytest.raises(RuntimeError, match="simulated crash"):
        _run(hook_config, out)
    assert _run(hook_config, out, mode="train_resume") == 0
    hooks = load_checkpoint(out / "checkpoints" / "model_final.pth")["hooks"]
    assert hooks["CountingHook"] == {"steps": 3} and hooks["CountingHook#2"] == {"steps": 3}
    assert "BestCheckpointer" in hooks  # the built-in hooks keep their keys
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    counts = [(r["iteration"], r["count_a"], r["count_b"]) for r in rows if "loss" in r]
    assert counts == [(1, 1, 1), (2, 2, 2), (3, 3, 3)]  # logged: they ran before the LoggingHook


def test_an_unknown_hook_name_suggests_the_closest(synth_root, hook_config, tmp_path, capsys):
    bad = tmp_path / "bad.py"
    bad.write_text(f'_base_ = ["{hook_config}"]\ntrain = dict(hooks=[dict(name="CountingHok")])\n')
    assert _run(bad, tmp_path / "run") == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "HOOKS registry" in err and "'CountingHook'" in err


def test_register_hooks_orders_by_priority_and_restores_state_saved_before(synth_root, tiny_config, tmp_path):
    cfg = load_config(tiny_config, TINY_OVERRIDES)
    trainer = Trainer(cfg, tmp_path / "run")
    assert [type(h).__name__ for h in trainer.hooks] == ["LoggingHook", "EvalHook", "BestCheckpointer",
                                                         "PeriodicCheckpointer"]

    class First(CountingHook):
        priority = 5

    ckpt = {**trainer.checkpoint_state(), "hooks": {"First": {"steps": 7}}}
    trainer.load_checkpoint_state(ckpt, "ckpt")
    trainer.register_hooks([CountingHook("late"), First("first")])  # after the resume: state still restored
    assert [type(h).__name__ for h in trainer.hooks] == ["First", "CountingHook", "LoggingHook", "EvalHook",
                                                         "BestCheckpointer", "PeriodicCheckpointer"]
    assert trainer.hooks[0].steps == 7 and trainer.hooks[1].steps == 0
    assert trainer.hooks[0].trainer.max_iter == trainer.max_iter  # a (weak) reference to the trainer
    with pytest.raises(ConfigError, match=r"hook 0 \(Identity\) is not a trainers.hooks.HookBase"):
        trainer.register_hooks([torch.nn.Identity()])


def test_ema_hook_names_a_missing_module_and_refuses_mismatched_pairs():
    class Stub:
        def __init__(self, model):
            self.model = model

    model = torch.nn.ModuleDict({"student": torch.nn.Linear(2, 2), "teacher": torch.nn.Linear(2, 2),
                                 "other": torch.nn.Linear(3, 2)})
    hook = EMAHook({"teachr": "student"})
    hook.trainer = Stub(model)
    with pytest.raises(ConfigError, match="no module 'teachr'; did you mean 'teacher'"):
        hook.before_train()
    hook = EMAHook({"other": "student"})
    hook.trainer = Stub(model)
    with pytest.raises(ConfigError, match="do not have the same parameters"):
        hook.before_train()
    with pytest.raises(ConfigError, match=r"lie in \[0, 1\]"):
        EMAHook({"teacher": "student"}, momentum=1.5)
