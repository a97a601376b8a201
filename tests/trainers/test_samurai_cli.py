"""SAM2 / SAMURAI through the CLI at a tiny size on whole videos: a SAM2 run's checkpoint evaluates as SAMURAI,
tools/export_sam2.py writes a package-format SAM2 checkpoint that zero-shot SAMURAI loads (model.sam2.checkpoint,
no --eval_path) with the same metrics, and a LoRA run keeps only its adapters and reloads to the same metrics."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import main as cli
from core.checkpoint import load_checkpoint

REPO = Path(__file__).resolve().parents[2]
TINY = ["train.max_iter=2", "train.eval_period=-1", "train.checkpoint_period=2", "train.batch_size=2",
        "train.log_period=1", "optim.scheduler.warmup_iters=1", "data.num_workers=0", "data.train_mapper.size=[64,64]",
        "data.train_mapper.clip_len=4", "log.wandb.enabled=false", "log.tensorboard=false", "model.sam2.image_size=64"]
VIDEO = """
_video = dict(per_video=True, mapper=dict(name="VideoEvalMapper", size=[64, 64], transforms=[dict(name="FanCrop")]),
              evaluator=[dict(name="VideoSegEvaluator", num_vis=0), dict(name="TrackingEvaluator")])
data = dict(evaluate=[dict(name="echo_synth_random_test", tag="video", **_video)])
"""


def _config(tmp_path: Path, base: str) -> Path:
    path = tmp_path / f"{base}_tiny_test.py"
    path.write_text(f'_base_ = ["{REPO / "configs" / "cardiac" / base}.py"]\n{VIDEO}')
    return path


def _metrics(out: Path) -> dict:
    return json.loads((out / "eval" / "video" / "metrics.json").read_text())


@pytest.fixture(scope="module")
def sam2_run(synth_root, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sam2_cli")
    out = tmp / "sam2"
    assert cli.main(["--config_file", str(_config(tmp, "sam2_tiny")), "--output_dir", str(out), *TINY]) == 0
    return tmp, out / "checkpoints" / "model_final.pth"


def test_a_sam2_checkpoint_evaluates_as_samurai_and_the_prompt_frame_is_not_scored(sam2_run):
    tmp, ckpt = sam2_run
    results = {}
    for name in ("sam2_tiny", "samurai_tiny"):
        out = tmp / f"eval_{name}"
        assert cli.main(["--config_file", str(_config(tmp, name)), "--trainer_mode", "eval", "--eval_path", str(ckpt),
                         "--output_dir", str(out), "model.sam2.image_size=64"]) == 0
        results[name] = _metrics(out)
    from core.catalog import DatasetCatalog

    metas = DatasetCatalog.get("echo_synth_random_test")  # one sample per annotated frame
    videos = {m["video_id"] for m in metas}
    a, b = results["sam2_tiny"], results["samurai_tiny"]
    for m in (a, b):
        assert 0 <= m["mDice"] <= 1 and 0 <= m["mLost"] <= 1 and m["mAreaConsistency"] >= 0
        # one frame per video (its first annotated one) carried the GT-mask prompt and is left out
        assert m["num_videos"] == len(videos)
        assert m["num_scored_frames"] == m["num_tracking_scored_frames"] == len(metas) - len(videos)


def test_exported_sam2_loads_zero_shot_with_the_same_metrics(sam2_run, capsys):
    from tools.export_sam2 import main as export

    tmp, ckpt = sam2_run
    sam2_file = tmp / "sam2_export.pth"
    assert export([str(ckpt), str(sam2_file)]) == 0
    assert export([str(ckpt), str(sam2_file)]) == 2 and "exists" in capsys.readouterr().err  # never overwritten
    state = torch.load(sam2_file, weights_only=True)["model"]
    run_state = load_checkpoint(ckpt)["model"]
    assert all(torch.equal(v, run_state[f"sam2.model.{k}"]) for k, v in state.items())
    config = str(_config(tmp, "samurai_tiny"))
    zero, from_run = tmp / "zero_shot", tmp / "from_run"
    assert cli.main(["--config_file", config, "--trainer_mode", "eval", "--output_dir", str(zero),
                     "model.sam2.image_size=64", f"model.sam2.checkpoint={sam2_file}", "model.sam2_train=frozen"]) == 0
    assert cli.main(["--config_file", config, "--trainer_mode", "eval", "--eval_path", str(ckpt),
                     "--output_dir", str(from_run), "model.sam2.image_size=64"]) == 0
    z, r = _metrics(zero), _metrics(from_run)
    assert z["mDice"] == r["mDice"] and z["mLost"] == r["mLost"]


def test_a_lora_run_keeps_only_adapters_and_reloads_to_the_same_metrics(sam2_run):
    from tools.export_sam2 import export

    tmp, ckpt = sam2_run
    base = tmp / "sam2_base.pth"
    if not base.exists():
        export(ckpt, base)
    out = tmp / "lora"
    assert cli.main(["--config_file", str(_config(tmp, "samurai_tiny_lora_adapt")), "--output_dir", str(out), *TINY,
                     f"model.sam2.checkpoint={base}", "data.train=[echo_synth_random_train]",
                     "train.eval_period=2"]) == 0
    final = load_checkpoint(out / "checkpoints" / "model_final.pth")
    assert final["model_state"] == "trainable"
    lora_keys = [k for k in final["model"] if "lora_" in k]
    assert lora_keys and len(final["model"]) - len(lora_keys) <= 1  # + SAM2's fixed prompt-encoding buffer
    info = json.loads((out / "model_info.json").read_text())
    assert 0 < info["trainable_params"] < info["params"] / 10
    from tools.export_sam2 import main as export_cli
    from core.errors import CheckpointError

    with pytest.raises(CheckpointError, match="only the trained part"):  # adapters alone are no SAM2
        export(out / "checkpoints" / "model_final.pth", tmp / "nope.pth")
    assert export_cli([str(out / "checkpoints" / "model_final.pth"), str(tmp / "nope.pth")]) == 2
    assert not (tmp / "nope.pth").exists()
    again = tmp / "lora_again"
    assert cli.main(["--trainer_mode", "eval", "--eval_path", str(out / "checkpoints" / "model_final.pth"),
                     "--output_dir", str(again)]) == 0
    assert _metrics(again)["mDice"] == _metrics(out)["mDice"]
