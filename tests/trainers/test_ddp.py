"""Multi-process runs under torchrun (gloo on CPU): training equivalence with one process, evaluation that scores
every test sample exactly once, and a 2-"node" launch on loopback."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import main as cli
from core.catalog import DatasetCatalog
from core.checkpoint import load_checkpoint
from tests.conftest import TINY_OVERRIDES

REPO = Path(__file__).resolve().parents[2]
# GroupNorm (batch-independent) and 4 clips per step in total: 1 process × 4 or 2 processes × 2. SGD: Adam's
# update g/sqrt(v) turns the rounding noise of (mathematically) zero gradients into steps of size ~lr, so with
# AdamW the two runs drift apart by ~lr per step whatever the framework does (benchmarks/ddp_equivalence.py).
EQUIV = ["train.max_iter=3", "train.eval_period=0", "train.batch_size=4", "model.norm=group", "optim.name=SGD",
         "optim.base_lr=0.05", "data.evaluate=[echo_synth_site_test]"]


def torchrun(args: list[str], *launcher: str, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", *launcher, "main.py", *args]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def final_weights(run: Path) -> dict:
    return load_checkpoint(run / "checkpoints" / "model_final.pth")["model"]


def max_diff(a: dict, b: dict) -> float:
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_train_like_one_and_score_each_sample_once(synth_root, tiny_config, tmp_path):
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    base = ["--config_file", str(tiny_config), *TINY_OVERRIDES, *EQUIV]
    assert cli.main([*base, "--output_dir", str(single)]) == 0
    proc = torchrun([*base, "--output_dir", str(ddp)], "--standalone", "--nproc_per_node", "2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 process(es)" in (ddp / "log.txt").read_text()
    assert max_diff(final_weights(single), final_weights(ddp)) < 1e-5

    n = len(DatasetCatalog.get("echo_synth_site_test"))
    assert n % 2 == 1  # an odd count: the two shards differ in size
    m_ddp = json.loads((ddp / "eval" / "echo_synth_site_test" / "metrics.json").read_text())
    assert m_ddp["num_samples"] == n
    # the single-process evaluation of the DDP run's own checkpoint gives the same numbers
    again = tmp_path / "again"
    assert cli.main(["--trainer_mode", "eval", "--eval_path", str(ddp / "checkpoints" / "model_final.pth"),
                     "--output_dir", str(again)]) == 0
    m_one = json.loads((again / "eval" / "echo_synth_site_test" / "metrics.json").read_text())
    for k in ("mDice", "mIoU", "Dice_LV", "Dice_RV", "num_samples"):
        assert abs(m_one[k] - m_ddp[k]) < 1e-6, k


def test_two_nodes_on_loopback_match_one_process(synth_root, tiny_config, tmp_path):
    """Two torchrun launchers (--nnodes 2, one process each) rendezvous on 127.0.0.1, as on two machines."""
    single, multi = tmp_path / "single", tmp_path / "multi"
    base = ["--config_file", str(tiny_config), *TINY_OVERRIDES, *EQUIV]
    assert cli.main([*base, "--output_dir", str(single)]) == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for attempt in range(2):  # a free port can be taken by another process before node 0 binds it: retry once
        port = str(free_port())
        shutil.rmtree(multi, ignore_errors=True)
        procs = [subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nnodes", "2",
                                   "--nproc_per_node", "1", "--node_rank", str(r), "--master_addr", "127.0.0.1",
                                   "--master_port", port, "main.py", *base, "--output_dir", str(multi)],
                                  cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for r in (0, 1)]
        try:
            outs = [p.communicate(timeout=150) for p in procs]
        except subprocess.TimeoutExpired:
            for p in procs:
                p.kill()
            outs = [p.communicate() for p in procs]
        if all(p.returncode == 0 for p in procs):
            break
    assert all(p.returncode == 0 for p in procs), outs[0][1][-2000:] + outs[1][1][-2000:]
    assert max_diff(final_weights(single), final_weights(multi)) < 1e-5
