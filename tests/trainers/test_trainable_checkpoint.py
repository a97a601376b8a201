"""train.checkpoint.state="trainable": checkpoints hold the trained state only (the frozen base is named by its
path and sha256), reload to identical predictions, resume bit for bit, refuse another base in one line, and the
disk-space check budgets what is actually saved."""
from __future__ import annotations

import json

import pytest
import torch

import main as cli
from core.checkpoint import load_checkpoint
from core.config import load_config
from core.registry import MODELS, forwards
from models.metaarchs.unet_baseline import UNetBaseline
from tests.conftest import TINY_OVERRIDES, crash_at
from trainers.train_loop import Trainer, load_model


@forwards(UNetBaseline)
class FrozenEncoderUNet(UNetBaseline):
    """The U-Net with its encoder frozen (a stand-in for a foundation model with adapters); ``pretrained_path``
    is then the frozen base's file (None: the seeded random init)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.net.encoder.requires_grad_(False)
        self.frozen_base_path = kwargs.get("pretrained_path")


@pytest.fixture
def frozen_config(tmp_path, tiny_config):
    MODELS.register(FrozenEncoderUNet)
    path = tmp_path / "frozen_unet.py"
    path.write_text(f'_base_ = ["{tiny_config}"]\nmodel = dict(name="FrozenEncoderUNet")\n')
    yield path
    MODELS._obj_map.pop("FrozenEncoderUNet")


def _run(config, out, *extra, mode="train_attmpt"):
    return cli.main(["--config_file", str(config), "--trainer_mode", mode, "--output_dir", str(out),
                     *TINY_OVERRIDES, "train.eval_period=0", *extra])


def _batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"video": torch.rand(2, 3, 3, 64, 64, generator=g), "has_ann": torch.ones(2, 3, dtype=torch.bool)}


def test_trainable_checkpoints_hold_only_the_trained_state_and_reload_to_identical_predictions(
        synth_root, frozen_config, tmp_path, capsys):
    full, part = tmp_path / "full", tmp_path / "part"
    assert _run(frozen_config, full) == 0
    assert _run(frozen_config, part, "train.checkpoint.state=trainable") == 0
    a = load_checkpoint(full / "checkpoints" / "model_final.pth")
    b = load_checkpoint(part / "checkpoints" / "model_final.pth")
    frozen = {k for k in a["model"] if k.startswith("net.encoder.") and not k.endswith(
        ("running_mean", "running_var", "num_batches_tracked"))}
    assert frozen and b["model_state"] == "trainable" and "model_state" not in a
    assert set(b["model"]) == set(a["model"]) - frozen  # encoder BatchNorm statistics move: they are kept
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in b["model"])
    rec = b["frozen_base"]
    assert rec["path"] is None and rec["num_tensors"] == len(frozen) and len(rec["state_sha256"]) == 64
    size = lambda run: (run / "checkpoints" / "model_final.pth").stat().st_size  # noqa: E731
    assert size(part) < 0.7 * size(full)

    # the disk-space check budgets what is saved: model state + 2 optimizer moments of the trainable parameters
    cfg = load_config(frozen_config, [*TINY_OVERRIDES, "train.checkpoint.state=trainable"])
    trainer = Trainer(cfg, tmp_path / "unused")
    assert 0.9 < size(part) / trainer.checkpoint_bytes() < 1.1
    cfg_full = load_config(frozen_config, TINY_OVERRIDES)
    assert Trainer(cfg_full, tmp_path / "unused").checkpoint_bytes() > 1.5 * trainer.checkpoint_bytes()

    # rebuilt from its config (seeded: the same random frozen base) + the trained part = the full model
    m_full = load_model(cfg_full, torch.device("cpu"), a, "a").eval()
    m_part = load_model(cfg, torch.device("cpu"), b, "b").eval()
    batch = _batch()
    assert torch.equal(m_full.predict(batch)["probs"], m_part.predict(batch)["probs"])
    # and through the CLI: the same metrics as the full checkpoint
    for run in (full, part):
        assert cli.main(["--trainer_mode", "eval", "--eval_path", str(run / "checkpoints" / "model_final.pth"),
                         "--output_dir", str(run / "again")]) == 0
    ma, mb = (json.loads((run / "again" / "eval" / "echo_synth_random_test" / "metrics.json").read_text())
              for run in (full, part))
    assert ma["mDice"] == mb["mDice"] and ma["num_samples"] == mb["num_samples"]

    # another frozen base (another seed for the random init) is refused in one line naming the checkpoint
    capsys.readouterr()
    assert cli.main(["--trainer_mode", "eval", "--eval_path", str(part / "checkpoints" / "model_final.pth"),
                     "--output_dir", str(tmp_path / "bad"), "train.seed=7"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "model_final.pth" in err and "frozen base" in err


def test_trainable_checkpoint_resumes_bit_for_bit(synth_root, frozen_config, tmp_path, monkeypatch):
    ref, crashed = tmp_path / "ref", tmp_path / "crashed"
    common = ["train.checkpoint.state=trainable", "train.max_iter=3", "train.checkpoint_period=1",
              "train.eval_period=-1"]
    assert _run(frozen_config, ref, *common) == 0
    with crash_at(monkeypatch, 2), pytest.raises(RuntimeError, match="simulated crash"):
        _run(frozen_config, crashed, *common)
    assert _run(frozen_config, crashed, *common, mode="train_resume") == 0
    a, b = (load_checkpoint(r / "checkpoints" / "model_final.pth") for r in (ref, crashed))
    assert set(a["model"]) == set(b["model"]) and all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert a["frozen_base"] == b["frozen_base"]


def test_a_changed_frozen_base_file_is_refused_naming_the_file(synth_root, frozen_config, tmp_path, capsys):
    torch.manual_seed(3)
    base = tmp_path / "encoder.pth"
    torch.save(UNetBaseline(decoder_channels=[32, 16, 16, 8, 8]).net.encoder.state_dict(), base)
    run = tmp_path / "run"
    assert _run(frozen_config, run, "train.checkpoint.state=trainable", "train.max_iter=1",
                "train.eval_period=-1", f"model.pretrained_path={base}") == 0
    rec = load_checkpoint(run / "checkpoints" / "model_final.pth")["frozen_base"]
    assert rec["path"] == str(base) and len(rec["file_sha256"]) == 64
    state = torch.load(base, weights_only=True)
    first = next(k for k, v in state.items() if v.is_floating_point())
    state[first] = state[first] + 1  # the base file changed after training
    torch.save(state, base)
    capsys.readouterr()
    assert cli.main(["--trainer_mode", "eval", "--eval_path", str(run / "checkpoints" / "model_final.pth"),
                     "--output_dir", str(tmp_path / "eval")]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(base) in err and "sha256" in err
