"""End-to-end: train, evaluate, resume, refuse to overwrite, reproduce metrics from a checkpoint."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import main as cli
from tests.conftest import TINY_OVERRIDES


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
    ck = torch.load(out / "checkpoints" / "model_final.pth", weights_only=False)
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

    from trainers.train_loop import Trainer

    real_step = Trainer.run_step

    def crash_at_4(self):
        if self.iter == 3:
            raise RuntimeError("simulated crash")
        real_step(self)

    monkeypatch.setattr(Trainer, "run_step", crash_at_4)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run(tiny_config, crashed, "train.max_iter=5", "train.eval_period=-1")
    monkeypatch.setattr(Trainer, "run_step", real_step)
    assert not (crashed / "checkpoints" / "model_final.pth").exists()
    assert run(tiny_config, crashed, "train.max_iter=5", "train.eval_period=-1", mode="train_resume") == 0

    a = torch.load(ref / "checkpoints" / "model_final.pth", weights_only=False)
    b = torch.load(crashed / "checkpoints" / "model_final.pth", weights_only=False)
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


def test_resume_refuses_model_change_but_allows_max_iter(synth_root, tiny_config, tmp_path, capsys):
    out = tmp_path / "run"
    assert run(tiny_config, out, "train.max_iter=2", "train.eval_period=-1") == 0
    assert run(tiny_config, out, "train.max_iter=2", "train.eval_period=-1", "optim.base_lr=0.5",
               mode="train_resume") == 1
    assert "optim.base_lr" in capsys.readouterr().err
    assert run(tiny_config, out, "train.max_iter=3", "train.eval_period=-1", mode="train_resume") == 0
    assert torch.load(out / "checkpoints" / "model_final.pth", weights_only=False)["iteration"] == 3


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

    from trainers.train_loop import Trainer

    real_step = Trainer.run_step

    def crash_at_3(self):  # after the iteration-2 checkpoint
        if self.iter == 2:
            raise RuntimeError("simulated crash")
        real_step(self)

    monkeypatch.setattr(Trainer, "run_step", crash_at_3)
    with pytest.raises(RuntimeError, match="simulated crash"):
        cli.main(["--trainer_mode", "train_attmpt", "--output_dir", str(resumed), *common])
    monkeypatch.setattr(Trainer, "run_step", real_step)
    assert cli.main(["--trainer_mode", "train_resume", "--output_dir", str(resumed), *common]) == 0
    a = torch.load(ref / "checkpoints" / "model_final.pth", weights_only=False)
    b = torch.load(resumed / "checkpoints" / "model_final.pth", weights_only=False)
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
