"""A 2-process gloo run under torchrun: training works, and evaluation scores every test sample exactly once
(metrics equal the single-process evaluation of the same checkpoint)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import main as cli
from core.catalog import DatasetCatalog
from tests.conftest import TINY_OVERRIDES

REPO = Path(__file__).resolve().parents[2]


def test_two_process_gloo_train_and_sharded_eval(synth_root, tiny_config, tmp_path):
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "main.py",
           "--config_file", str(tiny_config), "--output_dir", str(out), *TINY_OVERRIDES, "train.max_iter=2",
           "train.eval_period=0", "model.norm=group", "data.evaluate=[echo_synth_site_test]"]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 process(es)" in (out / "log.txt").read_text()
    ddp = json.loads((out / "eval" / "echo_synth_site_test" / "metrics.json").read_text())
    n = len(DatasetCatalog.get("echo_synth_site_test"))
    assert ddp["num_samples"] == n

    single = tmp_path / "single"
    assert cli.main(["--trainer_mode", "eval", "--eval_path", str(out / "checkpoints" / "model_final.pth"),
                     "--output_dir", str(single)]) == 0
    one = json.loads((single / "eval" / "echo_synth_site_test" / "metrics.json").read_text())
    assert one["num_samples"] == n
    for k in ("mDice", "mIoU", "Dice_LV", "Dice_RV"):
        assert abs(one[k] - ddp[k]) < 1e-6, k
