"""End-to-end: train, evaluate, resume, refuse to overwrite, reproduce metrics from a checkpoint."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import main as cli
from core.checkpoint import load_checkpoint
from tests.conftest import TINY_OVERRIDES, crash_at


def run(config, out, *extra, mode="train_attmpt"):
    return cli.main(["--config_file", str(config), "--trainer_mode", mode, "--output_dir", str(out),
                     *TINY_OVERRIDES, *extra])


def jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_train_writes_run_dir_and_eval_reproduces_logged_metrics(synth_root, tiny_config, tmp_path, capsys):
    out = tmp_path / "run"
    assert run(tiny_config, out, "log.tensorboard=true") == 0
    ckpts = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert ckpts == ["model_0000002.pth", "model_best.pth", "model_final.pth"]
    for f in ("config.yaml", "log.txt", "metrics.jsonl", "env.txt", "model_info.json"):
        assert (out / f).is_file(), f
    assert any((out / "tensorboard").iterdir())
    ck = load_checkpoint(out / "checkpoints" / "model_final.pth")
    assert {"model", "optimizer", "scheduler", "iteration", "rng", "sampler"} <= set(ck)
    assert ck["iteration"] == 4 and ck["sampler"]["consumed"] == 8
    info = json.loads((out / "model_info.json").read_text())
    assert info["params"] > 1e5 and info["gflops_per_clip"] > 0
    rows = jsonl(out / "metrics.jsonl")
    assert [r["iteration"] for r in rows if "loss" in r] == [1, 2, 3, 4]
    logged = [r for r in rows if "echo_synth_random_test/mDice" in r]
    assert [r["iteration"] for r in logged] == [2, 4]
    m = json.loads((out / "eval" / "echo_synth_random_test" / "metrics.json").read_text())
    for k in ("mDice", "mIoU", "Dice_LV", "Dice_LA", "Dice_RA", "Dice_RV", "IoU_LV", "num_samples"):
        assert k in m
    assert m["iteration"] == 4 and 0.0 <= m["mDice"] <= 1.0
    assert (out / "eval" / "echo_synth_random_test" / "per_video.csv").is_file()
    assert "| echo_synth_random_test |" in capsys.readouterr().out

    eval_out = tmp_path / "eval_run"
    assert cli.main(["--trainer_mode", "eval", "--eval_path", str(out / "checkpoints" / "model_final.pth"),
                     "--output_dir", str(eval_out)]) == 0
    m2 = json.loads((eval_out / "eval" / "echo_synth_random_test" / "metrics.json").read_text())
    assert m2["mDice"] == pytest.approx(logged[-1]["echo_synth_random_test/mDice"], abs=1e-9)
    assert m2["num_samples"] == m["num_samples"]


def test_eval_of_a_folder_runs_every_checkpoint_in_order(synth_root, tiny_config, tmp_path, capsys):
    out = tmp_path / "run"
    assert run(tiny_config, out, "train.max_iter=2", "train.checkpoint_period=1", "train.eval_period=-1") == 0
    capsys.readouterr()
    assert cli.main(["--trainer_mode", "eval", "--eval_path", str(out / "checkpoints")]) == 0
    text = capsys.readouterr().out
    assert text.index("model_0000001.pth") < text.index("model_final.pth")
    assert (out / "eval" / "model_0000001" / "echo_synth_random_test" / "metrics.json").is_file()
    assert (out / "eval" / "model_final" / "echo_synth_random_test" / "metrics.json").is_file()


def test_resume_after_crash_ends_with_identical_weights(synth_root, tiny_config, tmp_path, monkeypatch):
    ref, crashed = tmp_path / "ref", tmp_path / "crashed"
    assert run(tiny_config, ref, "train.max_iter=5", "train.eval_period=-1") == 0
    with crash_at(monkeypatch, 3), pytest.raises(RuntimeError, match="simulated crash"):
        run(tiny_config, crashed, "train.max_iter=5", "train.eval_period=-1")
    assert not (crashed / "checkpoints" / "model_final.pth").exists()
    assert run(tiny_config, crashed, "train.max_iter=5", "train.eval_period=-1", mode="train_resume") == 0

    a = load_checkpoint(ref / "checkpoints" / "model_final.pth")
    b = load_checkpoint(crashed / "checkpoints" / "model_final.pth")
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    sa, sb = a["optimizer"]["state"], b["optimizer"]["state"]
    assert all(torch.equal(sa[i]["exp_avg_sq"], sb[i]["exp_avg_sq"]) for i in sa)
    la = [r for r in jsonl(ref / "metrics.jsonl") if "loss" in r]
    lb = {r["iteration"]: r for r in jsonl(crashed / "metrics.jsonl") if "loss" in r}
    assert [r["loss"] for r in la] == [lb[r["iteration"]]["loss"] for r in la]


def test_train_attmpt_refuses_existing_run_and_start_over_keeps_it(synth_root, tiny_config, tmp_path, capsys):
    out = tmp_path / "run"
    assert run(tiny_config, out, "train.max_iter=1", "train.eval_period=-1") == 0
    before = (out / "checkpoints" / "model_final.pth").read_bytes()
    assert run(tiny_config, out, "train.max_iter=1", "train.eval_period=-1") == 1
    err = capsys.readouterr().err.strip()
    assert "already holds 1 checkpoint" in err and "--start_over" in err and len(err.splitlines()) == 1
    assert (out / "checkpoints" / "model_final.pth").read_bytes() == before
    assert run(tiny_config, out, "train.max_iter=1", "train.eval_period=-1", "--start_over") == 0
    archived = [p for p in tmp_path.iterdir() if p.name.startswith("run.old-")]
    assert len(archived) == 1 and (archived[0] / "checkpoints" / "model_final.pth").read_bytes() == before


def test_training_without_evaluation_datasets_finishes_and_saves(synth_root, tiny_config, tmp_path):
    out = tmp_path / "run"  # data.evaluate=[]: the final evaluation has nothing to do, the best-checkpoint hook waits
    assert run(tiny_config, out, "train.max_iter=1", "data.evaluate=[]") == 0
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["model_final.pth"]


def test_resume_refuses_model_change_but_allows_max_iter(synth_root, tiny_config, tmp_path, capsys):
    out = tmp_path / "run"
    assert run(tiny_config, out, "train.max_iter=2", "train.eval_period=-1") == 0
    assert run(tiny_config, out, "train.max_iter=2", "train.eval_period=-1", "optim.base_lr=0.5",
               mode="train_resume") == 1
    assert "optim.base_lr" in capsys.readouterr().err
    assert run(tiny_config, out, "train.max_iter=3", "train.eval_period=-1", mode="train_resume") == 0
    assert load_checkpoint(out / "checkpoints" / "model_final.pth")["iteration"] == 3


def test_lgrnet_config_trains_resumes_and_eval_reproduces_through_the_cli(synth_root, tmp_path):
    """The `make demo` job end to end at toy size: LGRNet's config runs through the same trainer and evaluator."""
    repo = Path(__file__).resolve().parents[2]
    config = tmp_path / "tiny_lgrnet.py"
    config.write_text(f'_base_ = ["{repo}/configs/cardiac/lgrnet_tiny.py"]\n'
                      "model = dict(loss=dict(num_points=256, matcher=dict(num_points=256)))\n")
    overrides = [o for o in TINY_OVERRIDES if not o.startswith("model.")]
    out = tmp_path / "run"
    args = ["--config_file", str(config), "--output_dir", str(out), *overrides]
    assert cli.main(["--trainer_mode", "train_attmpt", *args, "train.max_iter=2"]) == 0
    assert cli.main(["--trainer_mode", "train_resume", *args]) == 0  # continues to max_iter=4
    info = json.loads((out / "model_info.json").read_text())
    assert info["model"] == "LGRNet" and info["gflops_per_clip"] > 0
    assert [r["iteration"] for r in jsonl(out / "metrics.jsonl") if "loss" in r] == [1, 2, 3, 4]
    logged = [r for r in jsonl(out / "metrics.jsonl") if "echo_synth_random_test/mDice" in r][-1]
    assert cli.main(["--trainer_mode", "eval", "--eval_path", str(out / "checkpoints" / "model_final.pth"),
                     "--output_dir", str(tmp_path / "eval")]) == 0
    m = json.loads((tmp_path / "eval" / "eval" / "echo_synth_random_test" / "metrics.json").read_text())
    assert m["iteration"] == 4
    assert m["mDice"] == pytest.approx(logged["echo_synth_random_test/mDice"], abs=1e-9)


def _tiny_lgsd_config(tmp_path) -> tuple[Path, list[str]]:
    repo = Path(__file__).resolve().parents[2]
    config = tmp_path / "tiny_lgsd.py"
    config.write_text(
        f'_base_ = ["{repo}/configs/cardiac/lgrnet_tiny_lgsd.py"]\n'
        "model = dict(loss=dict(num_points=256, matcher=dict(num_points=256)),\n"
        "             lgsd=dict(out_dim=32, hidden_dim=32, bottleneck_dim=16))\n"
        "data = dict(unlabeled=dict(mapper=dict(clip_len=3, num_local=2, global_size=[64, 64],\n"
        "                                       local_size=[32, 32], global_span=8, local_span=3)))\n")
    return config, [o for o in TINY_OVERRIDES if not o.startswith("model.")]


def test_lgsd_trains_on_mixed_batches_resumes_identically_and_evaluates_the_student(synth_root, tmp_path,
                                                                                     monkeypatch):
    config, overrides = _tiny_lgsd_config(tmp_path)
    ref, resumed = tmp_path / "ref", tmp_path / "resumed"
    common = ["--config_file", str(config), *overrides, "train.eval_period=-1"]
    assert cli.main(["--trainer_mode", "train_attmpt", "--output_dir", str(ref), *common]) == 0
    with crash_at(monkeypatch, 2), pytest.raises(RuntimeError, match="simulated crash"):  # after the it-2 checkpoint
        cli.main(["--trainer_mode", "train_attmpt", "--output_dir", str(resumed), *common])
    log = (resumed / "log.txt").read_text()  # a bug (not bad input) keeps its traceback, in log.txt too
    assert "Traceback (most recent call last)" in log and "RuntimeError: simulated crash" in log
    assert cli.main(["--trainer_mode", "train_resume", "--output_dir", str(resumed), *common]) == 0
    a = load_checkpoint(ref / "checkpoints" / "model_final.pth")
    b = load_checkpoint(resumed / "checkpoints" / "model_final.pth")
    assert any(k.startswith("teacher.") for k in a["model"]) and "dino.center" in a["model"]
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert float(a["model"]["dino.center"].abs().sum()) > 0
    moved = [k for k in a["model"] if k.startswith("teacher.encoder.")
             and not torch.equal(a["model"][k], a["model"]["student." + k[len("teacher."):]])]
    assert moved  # the teacher is an EMA, not a copy, of the trained student
    rows = [r for r in jsonl(ref / "metrics.jsonl") if "loss" in r]
    assert [r["iteration"] for r in rows] == [1, 2, 3, 4] and all(r["loss_lgsd"] > 0 for r in rows)
    assert rows[0]["lgsd_momentum"] < rows[-1]["lgsd_momentum"] <= 1.0
    rb = {r["iteration"]: r for r in jsonl(resumed / "metrics.jsonl") if "loss" in r}
    assert [r["loss"] for r in rows] == [rb[r["iteration"]]["loss"] for r in rows]
    info = json.loads((ref / "model_info.json").read_text())
    student = sum(v.numel() for k, v in a["model"].items() if k.startswith("student.")
                  and not k.endswith(("running_mean", "running_var", "num_batches_tracked", "center", "empty_weight")))
    assert info["model"] == "LGSD" and info["params"] <= student < info["training_params"]
    for who in ("student", "teacher"):
        out = tmp_path / f"eval_{who}"
        assert cli.main(["--trainer_mode", "eval", "--eval_path", str(ref / "checkpoints" / "model_final.pth"),
                         "--output_dir", str(out), f"model.lgsd.eval_with={who}"]) == 0
    ms, mt = (json.loads((tmp_path / f"eval_{w}" / "eval" / "echo_synth_random_test" / "metrics.json").read_text())
              for w in ("student", "teacher"))
    assert ms["mDice"] != mt["mDice"]


def test_lgsd_without_unlabelled_data_is_refused(synth_root, tmp_path, capsys):
    config, overrides = _tiny_lgsd_config(tmp_path)
    assert cli.main(["--trainer_mode", "train_attmpt", "--output_dir", str(tmp_path / "run"), "--config_file",
                     str(config), *overrides, "data.unlabeled.ratio=0"]) == 1
    err = capsys.readouterr().err.strip()
    assert "trains on unlabelled clips: set data.unlabeled" in err and len(err.splitlines()) == 1


class _SkipSecondStep(torch.amp.GradScaler):
    """A GradScaler that behaves like an fp16 one finding inf gradients at the second step: it skips
    ``optimizer.step()`` and halves its scale (a real one needs CUDA; the trainer only reads this protocol)."""

    def __init__(self, *args, **kwargs):
        super().__init__("cpu", enabled=False)
        self.steps, self.scale_value = 0, 2.0 ** 16

    def get_scale(self) -> float:
        return self.scale_value

    def step(self, optimizer, *args, **kwargs):
        self.steps += 1
        return None if self.steps == 2 else optimizer.step()

    def update(self, new_scale=None) -> None:
        if self.steps == 2:
            self.scale_value /= 2


def test_a_step_the_grad_scaler_skips_moves_neither_the_student_nor_the_ema_teacher(synth_root, tmp_path,
                                                                                    monkeypatch):
    config, overrides = _tiny_lgsd_config(tmp_path)
    common = ["--config_file", str(config), *overrides, "train.eval_period=-1", "train.max_iter=3",
              "train.checkpoint_period=1", "model.lgsd.momentum=0.5"]
    normal, skipping = tmp_path / "normal", tmp_path / "skipping"
    assert cli.main([*common, "--output_dir", str(normal)]) == 0
    monkeypatch.setattr(torch.amp, "GradScaler", _SkipSecondStep)
    assert cli.main([*common, "--output_dir", str(skipping)]) == 0
    first, second, final = (load_checkpoint(skipping / "checkpoints" / n)["model"]
                            for n in ("model_0000001.pth", "model_0000002.pth", "model_final.pth"))
    teacher = [k for k in first if k.startswith(("teacher.", "teacher_head.")) and first[k].is_floating_point()
               and not k.endswith(("running_mean", "running_var"))]
    student = [k for k in first if k.startswith("student.encoder.")]
    assert all(torch.equal(first[k], second[k]) for k in teacher + student)  # step 2 skipped: nothing moved
    assert any(not torch.equal(second[k], final[k]) for k in teacher)  # step 3 was taken: the EMA moved
    ref = [load_checkpoint(normal / "checkpoints" / n)["model"] for n in ("model_0000001.pth", "model_0000002.pth")]
    assert all(torch.equal(ref[0][k], first[k]) for k in teacher)  # the same first step as without the scaler
    assert any(not torch.equal(ref[0][k], ref[1][k]) for k in teacher)  # a taken step 2 moves the teacher
    rows = {r["iteration"]: r for r in jsonl(skipping / "metrics.jsonl") if "loss" in r}
    assert "amp_skipped_steps" not in rows[1] and rows[2]["amp_skipped_steps"] == 1


@pytest.mark.parametrize("off", ["train.best_checkpoint=null", "train.best_checkpoint.metric=null"])
def test_best_checkpoint_can_be_switched_off(synth_root, tiny_config, tmp_path, off):
    out = tmp_path / "run"
    assert run(tiny_config, out, off, "train.max_iter=2") == 0
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["model_final.pth"]  # no model_best.pth
