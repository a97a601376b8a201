"""Checkpoints are data: a pickle payload is refused before it runs, RNG states round-trip exactly through a
weights-only load, and checkpoints of the earlier format (numpy/random states as pickled tuples, a config without
the keys the defaults gained since) still load, evaluate and resume bit-exactly."""
from __future__ import annotations

import os
import pickle
import random

import numpy as np
import pytest
import torch
import yaml

import main as cli
from core.checkpoint import CheckpointError, get_rng_state, load_checkpoint, save_atomic, set_rng_state
from tests.conftest import TINY_OVERRIDES
from tools import segment_video


class _Payload:
    """Unpickling this object would run a shell command that creates ``marker``."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _evil_files(tmp_path) -> list:
    marker = tmp_path / "pwned"
    zipped, bare, old = tmp_path / "evil.pth", tmp_path / "evil_pickle.pth", tmp_path / "evil_old.pth"
    torch.save({"model": {}, "config": {}, "x": _Payload(marker)}, zipped)  # torch's zip format
    with open(bare, "wb") as f:  # a bare pickle renamed .pth; allowed globals (numpy's state) come first
        pickle.dump({"model": {}, "rng": np.random.get_state(), "x": _Payload(marker)}, f)
    # torch's pre-1.6 format: pickles followed by raw tensor bytes
    torch.save({"model": {"w": torch.zeros(2)}, "rng": np.random.get_state(), "x": _Payload(marker)}, old,
               _use_new_zipfile_serialization=False)
    return [zipped, bare, old]


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_malicious_checkpoint_is_refused_with_one_line_and_never_runs(tmp_path, capsys):
    marker = tmp_path / "pwned"
    for evil in _evil_files(tmp_path):
        with pytest.raises(CheckpointError, match=r"contains a pickled object of type posix\.system; refusing"):
            load_checkpoint(evil)
        capsys.readouterr()
        assert cli.main(["--trainer_mode", "eval", "--eval_path", str(evil), "--output_dir",
                         str(tmp_path / "out")]) == 1
        err = capsys.readouterr().err.strip()
        assert err == (f"error: Checkpoint {evil} contains a pickled object of type posix.system; refusing to "
                       f"load it (only tensors and plain data are accepted)")
        assert segment_video.main(["--eval_path", str(evil), "--video", str(tmp_path / "v.nii.gz")]) == 1
        assert "posix.system" in capsys.readouterr().err
    assert not marker.exists()


def test_rng_states_round_trip_exactly_through_a_weights_only_load(tmp_path):
    random.gauss(0, 1)
    np.random.randn()  # both generators now hold a cached Gaussian, which must round-trip too
    path = save_atomic({"model": {}, "rng": get_rng_state()}, tmp_path / "model_0000001.pth")
    torch.load(path, weights_only=True)  # plain data only, no allow-list needed
    first = (torch.rand(3), np.random.rand(3), np.random.randn(), random.random(), random.gauss(0, 1))
    set_rng_state(load_checkpoint(path)["rng"])
    again = (torch.rand(3), np.random.rand(3), np.random.randn(), random.random(), random.gauss(0, 1))
    for a, b in zip(first, again):
        assert np.array_equal(np.asarray(a), np.asarray(b))


def _legacy_rng(state: dict) -> dict:
    """The same generator states in the format checkpoints had before (numpy/random tuples)."""
    np_state, py = state["numpy"], state["python"]
    return {"torch": state["torch"],
            "numpy": (np_state["bit_generator"], np_state["state"]["key"].numpy().astype(np.uint32),
                      np_state["state"]["pos"], np_state["has_gauss"], np_state["gauss"]),
            "python": (py["version"], tuple(py["internal"].tolist()), py["gauss_next"])}


def test_checkpoint_of_the_earlier_format_loads_evaluates_and_resumes_bit_exactly(synth_root, tiny_config,
                                                                                   tmp_path):
    base = ["--config_file", str(tiny_config), *TINY_OVERRIDES, "train.max_iter=3", "train.checkpoint_period=1",
            "train.eval_period=-1"]
    ref, old = tmp_path / "ref", tmp_path / "old"
    assert cli.main([*base, "--output_dir", str(ref)]) == 0
    assert cli.main([*base, "--output_dir", str(old), "train.max_iter=3"]) == 0
    for name in ("model_0000002.pth", "model_final.pth"):
        (old / "checkpoints" / name).unlink()
    ckpt_path = old / "checkpoints" / "model_0000001.pth"
    ckpt = load_checkpoint(ckpt_path)
    ckpt["rng"] = _legacy_rng(ckpt["rng"])
    for stored in (ckpt["config"], saved := yaml.safe_load((old / "config.yaml").read_text())):
        del stored["optim"]["momentum"], stored["data"]["unlabeled"]  # keys the defaults gained since
    torch.save(ckpt, ckpt_path)  # what the earlier code path wrote
    (old / "config.yaml").write_text(yaml.safe_dump(saved))
    with pytest.raises(Exception):
        torch.load(ckpt_path, weights_only=True)  # numpy arrays need the loader's narrow allow-list
    assert cli.main(["--trainer_mode", "eval", "--eval_path", str(ckpt_path), "--output_dir",
                     str(tmp_path / "eval"), "data.evaluate=[echo_synth_site_test]"]) == 0
    assert cli.main([*base, "--output_dir", str(old), "--trainer_mode", "train_resume"]) == 0
    a, b = (load_checkpoint(d / "checkpoints" / "model_final.pth") for d in (ref, old))
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
