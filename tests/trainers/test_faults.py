"""Fault injection: kills (also mid-checkpoint), corrupt checkpoints, non-finite losses, bad data, full or
unwritable disks. Each fault is survived without losing work, or refused with a one-line error."""
from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import main as cli
from core.checkpoint import load_checkpoint
from tests.conftest import TINY_OVERRIDES

REPO = Path(__file__).resolve().parents[2]
FAULT = [*TINY_OVERRIDES, "train.max_iter=12", "train.checkpoint_period=1", "train.eval_period=-1"]
pytestmark = pytest.mark.slow


def cmd(config, out, mode="train_attmpt"):
    return [sys.executable, "main.py", "--config_file", str(config), "--trainer_mode", mode,
            "--output_dir", str(out), *FAULT]


def env():
    return {**os.environ, "OMP_NUM_THREADS": "2"}


def run_sub(args, **kw):
    proc = subprocess.run(args, cwd=REPO, env=env(), capture_output=True, text=True, timeout=300, **kw)
    return proc


def losses(run: Path) -> list[tuple]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [(r["iteration"], r["loss"], r["loss_ce"], r["loss_dice"], r["lr"]) for r in rows if "loss" in r]


def assert_same_final(a: Path, b: Path) -> None:
    ca = load_checkpoint(a / "checkpoints" / "model_final.pth")
    cb = load_checkpoint(b / "checkpoints" / "model_final.pth")
    for k in ca["model"]:
        assert torch.equal(ca["model"][k], cb["model"][k]), k
    for i, st in ca["optimizer"]["state"].items():
        for name, t in st.items():
            assert torch.equal(t, cb["optimizer"]["state"][i][name]), (i, name)
    assert ca["scheduler"] == cb["scheduler"] and ca["iteration"] == cb["iteration"] == 12
    assert losses(a) == losses(b)


@pytest.fixture(scope="module")
def reference(synth_root, tmp_path_factory):
    """An uninterrupted run (subprocess, like the faulted ones)."""
    d = tmp_path_factory.mktemp("ref")
    cfg = d / "tiny_unet.py"
    cfg.write_text(f'_base_ = ["{REPO}/configs/cardiac/unet_tiny.py"]\n')
    proc = run_sub(cmd(cfg, d / "run"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    return cfg, d / "run"


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_kill9_at_a_random_iteration_then_resume_is_bitwise_identical(reference, tmp_path, seed):
    cfg, ref = reference
    rng = random.Random(seed)
    k, delay = rng.randint(1, 4), rng.uniform(0.0, 0.25)
    out = tmp_path / "run"
    p = subprocess.Popen(cmd(cfg, out), cwd=REPO, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    target = out / "checkpoints" / f"model_{k:07d}.pth"
    deadline = time.time() + 240
    while not target.exists() and p.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    time.sleep(delay)
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert p.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert not (out / "checkpoints" / "model_final.pth").exists()
    proc = run_sub(cmd(cfg, out, "train_resume"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert_same_final(ref, out)


KILL_IN_SAVE = r"""
import os, signal, sys, torch
import core.checkpoint as ck
real_save, calls = torch.save, [0]
def save(obj, f, *a, **k):
    calls[0] += 1
    if calls[0] == 3:  # the third checkpoint: write half of it, then die mid-write
        import io
        buf = io.BytesIO(); real_save(obj, buf)
        f.write(buf.getvalue()[: len(buf.getvalue()) // 2]); f.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    return real_save(obj, f, *a, **k)
ck.torch.save = save
import main
sys.exit(main.main(sys.argv[1:]))
"""


def test_kill_during_checkpoint_write_keeps_previous_and_resumes(reference, tmp_path):
    cfg, ref = reference
    out = tmp_path / "run"
    args = cmd(cfg, out)[2:]
    proc = run_sub([sys.executable, "-c", KILL_IN_SAVE, *args])
    assert proc.returncode == -signal.SIGKILL
    ckdir = out / "checkpoints"
    assert sorted(p.name for p in ckdir.glob("model_*.pth")) == ["model_0000001.pth", "model_0000002.pth"]
    assert len(list(ckdir.glob(".model_0000003.pth.*.tmp"))) == 1  # the partial file never took a real name
    for p in ckdir.glob("model_*.pth"):
        load_checkpoint(p)
    proc = run_sub(cmd(cfg, out, "train_resume"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Removing a partial checkpoint" in (out / "log.txt").read_text()
    assert not list(ckdir.glob(".*.tmp"))
    assert_same_final(ref, out)


def test_truncated_newest_checkpoint_is_skipped_with_a_warning(reference, tmp_path):
    cfg, ref = reference
    out = tmp_path / "run"
    shutil.copytree(ref, out)
    (out / "checkpoints" / "model_final.pth").unlink()
    newest = out / "checkpoints" / "model_0000011.pth"
    newest.write_bytes(newest.read_bytes()[:5000])
    proc = run_sub(cmd(cfg, out, "train_resume"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    log = (out / "log.txt").read_text()
    assert "Skipping unusable checkpoint" in log and "model_0000011.pth is corrupt or truncated" in log
    assert "Resumed from" in log and "model_0000010.pth at iteration 10" in log
    assert_same_final(ref, out)


def nan_at(monkeypatch, iteration: int):
    from models.metaarchs.unet_baseline import UNetBaseline

    real, calls = UNetBaseline.forward, [0]

    def forward(self, batch):
        calls[0] += 1
        out = real(self, batch)
        return {k: v * float("nan") for k, v in out.items()} if calls[0] == iteration else out

    monkeypatch.setattr(UNetBaseline, "forward", forward)


def test_nonfinite_loss_stops_by_default_naming_iteration_and_terms(synth_root, tiny_config, tmp_path,
                                                                   monkeypatch, capsys):
    nan_at(monkeypatch, 3)
    out = tmp_path / "run"
    assert cli.main(["--config_file", str(tiny_config), "--output_dir", str(out), *FAULT]) == 1
    err = capsys.readouterr().err.strip()
    assert "Non-finite loss at iteration 3: loss_ce=nan, loss_dice=nan" in err and len(err.splitlines()) == 1
    names = sorted(p.name for p in (out / "checkpoints").glob("model_*.pth"))
    assert names == ["model_0000001.pth", "model_0000002.pth"]
    assert load_checkpoint(out / "checkpoints" / "model_0000002.pth")["iteration"] == 2


def test_nonfinite_loss_skip_policy_drops_the_step_and_counts_it(synth_root, tiny_config, tmp_path,
                                                                 monkeypatch):
    nan_at(monkeypatch, 3)
    out = tmp_path / "run"
    assert cli.main(["--config_file", str(tiny_config), "--output_dir", str(out), *FAULT,
                     "train.nonfinite.policy=skip"]) == 0
    c2, c3 = (load_checkpoint(out / "checkpoints" / f"model_000000{i}.pth") for i in (2, 3))
    assert all(torch.equal(c2["model"][k], c3["model"][k]) for k in c2["model"])  # no update at step 3
    assert c3["skipped_steps"] == 1 and c3["scheduler"]["last_epoch"] == 3
    rows = {r["iteration"]: r for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())}
    assert rows[3]["loss"] is None and rows[3]["skipped_steps"] == 1
    assert "step skipped (1 so far)" in (out / "log.txt").read_text()
    nan_at(monkeypatch, 1)
    assert cli.main(["--config_file", str(tiny_config), "--output_dir", str(tmp_path / "r2"), *FAULT,
                     "train.nonfinite.policy=skip", "train.nonfinite.max_skips=0"]) == 1


@pytest.fixture
def small_data(tmp_path):
    from data_schedule.synthetic.echo_synth import generate_echo_synth

    generate_echo_synth(tmp_path / "data", seed=3, videos_per_site=2, size_scale=0.4, frames=(12, 14),
                        annotated_frames=(2, 3))
    return tmp_path / "data"


def data_args(root):
    return [f"data.roots.echo_synth={root}", "data.train=[echo_synth_site_train]",
            "data.evaluate=[echo_synth_site_val]", "train.max_iter=2", "train.eval_period=0"]


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:300])


def test_corrupt_training_video_fails_by_default_and_is_skipped_on_request(small_data, tiny_config, tmp_path,
                                                                           capsys):
    bad = sorted((small_data / "cardiacUDC_dataset" / "Site_R_126").glob("*_image.nii.gz"))[0]
    truncate(bad)
    base = ["--config_file", str(tiny_config), *TINY_OVERRIDES, *data_args(small_data)]
    assert cli.main([*base, "--output_dir", str(tmp_path / "a")]) == 1
    err = capsys.readouterr().err.strip()
    assert bad.name in err and "Cannot read image file" in err and len(err.splitlines()) == 1
    assert cli.main([*base, "--output_dir", str(tmp_path / "b"), "data.bad_sample_policy=skip"]) == 0
    log = (tmp_path / "b" / "log.txt").read_text()
    assert f"Skipping a bad training video" in log and "1 video(s) left out" in log and bad.name in log


def test_evaluation_never_skips_a_bad_test_video(small_data, tiny_config, tmp_path, capsys):
    bad = sorted((small_data / "cardiacUDC_dataset" / "Site_G_20").glob("*_image.nii.gz"))[0]
    truncate(bad)
    assert cli.main(["--config_file", str(tiny_config), *TINY_OVERRIDES, *data_args(small_data),
                     "data.bad_sample_policy=skip", "--output_dir", str(tmp_path / "a")]) == 1
    assert bad.name in capsys.readouterr().err


def test_sample_failing_mid_training_is_replaced_logged_once_and_counted(synth_root, tiny_config, tmp_path,
                                                                         monkeypatch, capsys):
    from core.catalog import DatasetCatalog
    from data_schedule.mappers.clip_mapper import ClipTrainMapper
    from data_schedule.sources.nifti import DataError

    victim = DatasetCatalog.get("echo_synth_random_train")[0]["video_id"]
    real = ClipTrainMapper.__call__

    def flaky(self, meta, seed):
        if meta["video_id"] == victim:
            raise DataError(f"simulated unreadable cache for {victim}")
        return real(self, meta, seed)

    monkeypatch.setattr(ClipTrainMapper, "__call__", flaky)
    base = ["--config_file", str(tiny_config), *TINY_OVERRIDES, "train.max_iter=12", "train.eval_period=-1"]
    assert cli.main([*base, "--output_dir", str(tmp_path / "a")]) == 1
    assert "Cannot read training sample" in capsys.readouterr().err
    assert cli.main([*base, "--output_dir", str(tmp_path / "b"), "data.bad_sample_policy=skip"]) == 0
    log = (tmp_path / "b" / "log.txt").read_text()
    assert log.count("Skipped a bad training sample") == 1
    assert "training sample(s) replaced (1 file(s))" in log


def test_unwritable_run_directory_and_full_disk_are_refused_before_training(synth_root, tiny_config, tmp_path,
                                                                             monkeypatch, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    base = ["--config_file", str(tiny_config), *TINY_OVERRIDES, "train.max_iter=1"]
    assert cli.main([*base, "--output_dir", str(blocker / "run")]) == 1
    err = capsys.readouterr().err
    assert f"Run directory {blocker / 'run'} is not writable" in err

    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage._replace(free=2**20))
    out = tmp_path / "run"
    assert cli.main([*base, "--output_dir", str(out)]) == 1
    err = capsys.readouterr().err
    assert f"Not enough free disk space for run directory {out}: 1 MiB free" in err
    assert not (out / "checkpoints").exists()
