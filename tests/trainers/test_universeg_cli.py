"""UniverSeg (seed 004) through the CLI at a tiny size on the tiny EchoSynth: episodic training with in-task and
task augmentation resumes bit-exactly after a crash, its checkpoint evaluates to the metrics training recorded,
LoRA adaptation from that checkpoint trains and saves the adapters alone, and a checkpoint of another width is
refused with one line naming both widths."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import main as cli
from core.checkpoint import load_checkpoint
from tests.conftest import crash_at

BASE = Path(__file__).resolve().parents[2] / "configs" / "cardiac" / "universeg_tiny.py"
TINY = ["train.max_iter=4", "train.eval_period=4", "train.checkpoint_period=2", "train.batch_size=2",
        "train.log_period=1", "optim.scheduler.warmup_iters=1", "data.num_workers=0", "log.wandb.enabled=false",
        "log.tensorboard=false", "model.encoder=[8,8,8]", "model.decoder=[8,8]"]


@pytest.fixture()
def config(tmp_path) -> Path:
    path = tmp_path / "universeg_tiny_test.py"
    path.write_text(f'''_base_ = ["{BASE}"]
_support = dict(name="random_slices", dataset="echo_synth_random_train")
data = dict(train_mapper=dict(clip_len=2, size=[32, 32], support_size=2),
            evaluate=[dict(name="echo_synth_random_test", tag="frames", per_video=True,
                           mapper=dict(name="InContextEvalMapper", size=[32, 32], support=_support, support_size=2,
                                       queries="annotated", transforms=[dict(name="FanCrop")]),
                           evaluator=dict(name="VideoSegEvaluator", num_vis=0))])
''')
    return path


def run(cfg, out, *extra, mode="train_attmpt"):
    return cli.main(["--config_file", str(cfg), "--trainer_mode", mode, "--output_dir", str(out), *TINY, *extra])


def test_universeg_trains_resumes_bit_exactly_evaluates_and_adapts_with_lora(synth_root, config, tmp_path, monkeypatch,
                                                                               capsys):
    ref, crashed = tmp_path / "ref", tmp_path / "crashed"
    assert run(config, ref) == 0
    with crash_at(monkeypatch, 3), pytest.raises(RuntimeError, match="simulated crash"):
        run(config, crashed)
    assert run(config, crashed, mode="train_resume") == 0
    final = ref / "checkpoints" / "model_final.pth"
    a, b = load_checkpoint(final)["model"], load_checkpoint(crashed / "checkpoints" / "model_final.pth")["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # augmentation draws are seeded
    trained = json.loads((ref / "eval" / "frames" / "metrics.json").read_text())
    again = tmp_path / "again"
    assert cli.main(["--trainer_mode", "eval", "--eval_path", str(final), "--output_dir", str(again)]) == 0
    evaluated = json.loads((again / "eval" / "frames" / "metrics.json").read_text())
    assert evaluated["mDice"] == trained["mDice"] and evaluated["num_samples"] == trained["num_samples"] > 0

    # LoRA on the convolutions, from the trained checkpoint: adapters only, the base untouched
    lora = tmp_path / "lora"
    assert run(config, lora, "model.train_mode=lora", f"model.checkpoint={final}", "+model.lora={r: 2}",
               "train.checkpoint.state=trainable", "train.max_iter=2") == 0
    ck = load_checkpoint(lora / "checkpoints" / "model_final.pth")
    assert ck["model_state"] == "trainable" and ck["model"] and all("lora_" in k for k in ck["model"])
    assert any(".cross.conv.lora_A" in k for k in ck["model"])  # the CrossConvs' inner Conv2d took adapters

    # a checkpoint of another width: one line naming both
    capsys.readouterr()
    assert cli.main(["--config_file", str(config), "--trainer_mode", "eval", "--eval_path", str(final),
                     "--output_dir", str(tmp_path / "wide"), *TINY, "model.encoder=[16,16,16]",
                     "model.decoder=[16,16]"]) != 0
    err = capsys.readouterr().err
    assert "encoder widths [8, 8, 8] / decoder [8, 8], but the config builds encoder [16, 16, 16]" in err
    assert "Traceback" not in err
