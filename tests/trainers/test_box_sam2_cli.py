"""BOX-SAM2 through the CLI at a tiny size: trains, resumes bit-exactly after a crash, evaluates its checkpoint with
predicted and with ground-truth boxes (the GT-box row reads the same weights)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import main as cli
from core.checkpoint import load_checkpoint
from tests.conftest import crash_at

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "cardiac" / "box_sam2_tiny.py"
TINY = ["train.max_iter=4", "train.eval_period=-1", "train.checkpoint_period=2", "train.batch_size=2",
        "train.log_period=1", "optim.scheduler.warmup_iters=1", "data.num_workers=0", "data.eval_batch_size=4",
        "data.train_mapper.size=[64,64]", "data.eval_mapper.size=[64,64]", "data.eval_mapper.clip_len=5",
        "data.train_mapper.clip_len=3", "log.wandb.enabled=false", "log.tensorboard=false",
        "data.evaluator.num_vis=0", "model.sam2.image_size=64", "model.box_head.dim=32", "model.box_head.num_heads=2"]


def run(out, *extra, mode="train_attmpt"):
    return cli.main(["--config_file", str(CONFIG), "--trainer_mode", mode, "--output_dir", str(out), *TINY, *extra])


def test_box_sam2_resumes_bit_exactly_and_evaluates_with_either_boxes(synth_root, tmp_path, monkeypatch, capsys):
    ref, crashed = tmp_path / "ref", tmp_path / "crashed"
    assert run(ref) == 0
    with crash_at(monkeypatch, 3), pytest.raises(RuntimeError, match="simulated crash"):
        run(crashed)
    assert run(crashed, mode="train_resume") == 0
    a = load_checkpoint(ref / "checkpoints" / "model_final.pth")["model"]
    b = load_checkpoint(crashed / "checkpoints" / "model_final.pth")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)  # the jitter draws come from the checkpointed RNG
    ckpt = str(ref / "checkpoints" / "model_final.pth")
    capsys.readouterr()
    counts = set()
    for boxes in ("predicted", "gt"):
        out = tmp_path / f"eval_{boxes}"
        assert cli.main(["--trainer_mode", "eval", "--eval_path", ckpt, "--output_dir", str(out),
                         f"model.boxes={boxes}", "data.evaluator.num_vis=0"]) == 0
        m = json.loads((out / "eval" / "echo_synth_random_test" / "metrics.json").read_text())
        assert 0 <= m["mDice"] <= 1
        counts.add(m["num_samples"])
    assert len(counts) == 1 and counts.pop() > 0  # the same test samples scored either way


def test_a_lora_run_checkpoints_only_the_adapters_and_reloads_to_the_same_metrics(synth_root, tmp_path):
    out = tmp_path / "lora"
    assert run(out, "train.max_iter=2", "model.stage=sam2", "model.sam2_train=lora", "+model.lora={r: 2}",
               "train.checkpoint.state=trainable", "train.eval_period=2") == 0
    ckpt = load_checkpoint(out / "checkpoints" / "model_final.pth")
    assert ckpt["model_state"] == "trainable" and ckpt["model"]
    # neither SAM2's base nor the (frozen) box head: the adapters, and the one buffer a trainable-only state keeps
    # (buffers are state, not parameters: SAM2's fixed random prompt-encoding matrix)
    assert [k for k in ckpt["model"] if "lora_" not in k] == [
        "sam2.model.sam_prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"]
    assert ckpt["frozen_base"]["num_tensors"] > 100
    trained = json.loads((out / "eval" / "echo_synth_random_test" / "metrics.json").read_text())
    again = tmp_path / "again"
    assert cli.main(["--trainer_mode", "eval", "--eval_path", str(out / "checkpoints" / "model_final.pth"),
                     "--output_dir", str(again), "data.evaluator.num_vis=0"]) == 0
    reloaded = json.loads((again / "eval" / "echo_synth_random_test" / "metrics.json").read_text())
    assert reloaded["mDice"] == trained["mDice"] and reloaded["mIoU"] == trained["mIoU"]
