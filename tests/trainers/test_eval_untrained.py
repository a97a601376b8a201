"""``--trainer_mode eval --config_file C`` without ``--eval_path``: a model that does not train (``trains =
False``) or whose config names its weights (``model.*.checkpoint``) is evaluated as built; a trainable model
without a checkpoint is a one-line usage error, and so is training a model that does not train."""
from __future__ import annotations

import json

import pytest
import torch

import main as cli
from core.registry import MODELS, forwards
from models.base import MetaArch
from models.metaarchs.unet_baseline import UNetBaseline
from tests.conftest import TINY_OVERRIDES


class BrightnessModel(MetaArch):
    """A fixed rule (no weights to learn): class k where the frame's brightness falls in the k-th band."""

    trains = False

    def __init__(self, num_classes: int = 4):
        super().__init__()
        self.num_classes = num_classes

    def predict(self, batch):
        v = batch["video"][:, :, :1]  # B×T×1×H×W
        centres = (torch.arange(self.num_classes, device=v.device) + 1.0) / (self.num_classes + 1)
        return {"probs": (1 - (v - centres.view(1, 1, -1, 1, 1)).abs() * self.num_classes).clamp(0, 1)}


@forwards(UNetBaseline)
class LoadedUNet(UNetBaseline):
    """The U-Net with its whole state loaded from ``checkpoint`` (a local file), e.g. weights trained elsewhere."""

    def __init__(self, checkpoint: str | None = None, **kwargs):
        super().__init__(**kwargs)
        if checkpoint:
            self.load_state_dict(torch.load(checkpoint, weights_only=True))


@pytest.fixture
def registered():
    for cls in (BrightnessModel, LoadedUNet):
        MODELS.register(cls)
    yield
    for cls in (BrightnessModel, LoadedUNet):
        MODELS._obj_map.pop(cls.__name__)


def _config(tmp_path, tiny_config, model: str):
    path = tmp_path / "cfg.py"
    path.write_text(f'_base_ = ["{tiny_config}"]\nmodel = {model}\n')
    return path


def _metrics(out):
    return json.loads((out / "eval" / "echo_synth_random_test" / "metrics.json").read_text())


def test_a_model_that_does_not_train_is_evaluated_from_its_config_alone(synth_root, tiny_config, tmp_path, capsys,
                                                                       registered):
    cfg = _config(tmp_path, tiny_config, 'dict(_delete_=True, name="BrightnessModel", num_classes=4)')
    overrides = [o for o in TINY_OVERRIDES if not o.startswith("model.")]
    out = tmp_path / "eval"
    assert cli.main(["--trainer_mode", "eval", "--config_file", str(cfg), "--output_dir", str(out), *overrides]) == 0
    m = _metrics(out)
    assert m["checkpoint"] is None and m["num_samples"] > 0 and 0 <= m["mDice"] <= 1
    assert (out / "config.yaml").is_file() and "| echo_synth_random_test |" in capsys.readouterr().out
    # and it cannot be trained
    assert cli.main(["--config_file", str(cfg), "--output_dir", str(tmp_path / "train"), *overrides]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "does not train (trains=False)" in err
    # a training run's directory is not overwritten by such an evaluation
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    (tmp_path / "run" / "checkpoints" / "model_final.pth").write_bytes(b"")
    assert cli.main(["--trainer_mode", "eval", "--config_file", str(cfg), "--output_dir", str(tmp_path / "run"),
                     *overrides]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--eval_path" in err and not (tmp_path / "run" / "config.yaml").exists()


def test_a_trainable_model_needs_eval_path_unless_its_config_names_its_weights(synth_root, tiny_config, tmp_path,
                                                                              capsys, registered):
    assert cli.main(["--trainer_mode", "eval", "--config_file", str(tiny_config),
                     "--output_dir", str(tmp_path / "no"), *TINY_OVERRIDES]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "needs --eval_path" in err and "UNetBaseline" in err
    assert not (tmp_path / "no").exists()  # refused before anything was written

    torch.manual_seed(0)
    weights = tmp_path / "unet.pth"
    torch.save(UNetBaseline(decoder_channels=[32, 16, 16, 8, 8]).state_dict(), weights)
    cfg = _config(tmp_path, tiny_config, f'dict(name="LoadedUNet", checkpoint="{weights}")')
    out = tmp_path / "eval"
    assert cli.main(["--trainer_mode", "eval", "--config_file", str(cfg), "--output_dir", str(out),
                     *TINY_OVERRIDES]) == 0
    m = _metrics(out)
    assert m["weights"] == [str(weights)] and m["checkpoint"] is None and m["num_samples"] > 0
