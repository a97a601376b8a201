"""AR-SEG through the CLI at a tiny size on the tiny EchoSynth: training resumes bit-exactly after a crash, the
checkpoint evaluates to the metrics training recorded (greedy decoding), and the same checkpoint evaluates with
consensus decoding and without the refiner through ``model.decode.*`` overrides; the video variant trains too."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import main as cli
from core.checkpoint import load_checkpoint
from tests.conftest import crash_at

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "cardiac" / "arseg_tiny.py"
TINY = ["train.max_iter=4", "train.eval_period=4", "train.checkpoint_period=2", "train.batch_size=2",
        "train.log_period=1", "optim.scheduler.warmup_iters=1", "data.num_workers=0", "log.wandb.enabled=false",
        "log.tensorboard=false", "data.train_mapper.size=[32,32]", "data.eval_mapper.size=[32,32]",
        "data.train_mapper.clip_len=2", "data.eval_mapper.clip_len=3", "data.evaluator.num_vis=0",
        "model.dim=32", "model.depth=2", "model.heads=2", "model.stem=[8,8,8]", "model.tokenizer.grid=4",
        "model.refiner.channels=8"]


def run(out, *extra, mode="train_attmpt"):
    return cli.main(["--config_file", str(CONFIG), "--trainer_mode", mode, "--output_dir", str(out), *TINY, *extra])


def _metrics(run_dir: Path) -> dict:
    return json.loads(next((run_dir / "eval").rglob("metrics.json")).read_text())


def test_arseg_trains_resumes_bit_exactly_and_evaluates_with_each_decoding(synth_root, tmp_path, monkeypatch):
    ref, crashed = tmp_path / "ref", tmp_path / "crashed"
    assert run(ref) == 0
    with crash_at(monkeypatch, 3), pytest.raises(RuntimeError, match="simulated crash"):
        run(crashed)
    assert run(crashed, mode="train_resume") == 0
    final = ref / "checkpoints" / "model_final.pth"
    a, b = load_checkpoint(final)["model"], load_checkpoint(crashed / "checkpoints" / "model_final.pth")["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    trained = _metrics(ref)
    results = {}
    for name, extra in (("greedy", []), ("consensus", ["model.decode.mode=consensus", "model.decode.samples=3"]),
                        ("grid", ["model.decode.refine=false"])):
        out = tmp_path / name
        assert cli.main(["--trainer_mode", "eval", "--eval_path", str(final), "--output_dir", str(out),
                         *extra]) == 0
        results[name] = _metrics(out)
        assert results[name]["num_samples"] == trained["num_samples"] > 0
    assert results["greedy"]["mDice"] == trained["mDice"]
    assert results["consensus"]["mDice"] != results["greedy"]["mDice"] or \
        results["grid"]["mDice"] != results["greedy"]["mDice"]  # the overrides reach the decoder

    video = tmp_path / "video"
    assert run(video, "model.prefix_frames=2", "train.max_iter=2") == 0
    assert (video / "checkpoints" / "model_final.pth").exists()
