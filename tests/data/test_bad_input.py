"""Each bad input gets a one-line error naming the file/key and what was expected; nothing on disk is lost."""
from __future__ import annotations


import nibabel as nib
import numpy as np
import pytest
import torch

import main as cli
from core.checkpoint import load_checkpoint
from data_schedule.registers import cardiac_udc as reg
from data_schedule.sources.nifti import DataError, load_video
from tests.conftest import TINY_OVERRIDES


def save(path, arr_thw, dtype):
    img = nib.Nifti1Image(arr_thw.astype(dtype).transpose(2, 1, 0), np.eye(4))
    img.set_data_dtype(dtype)
    nib.save(img, str(path))
    return path


@pytest.fixture
def video(tmp_path):
    rng = np.random.default_rng(0)
    img = rng.integers(20, 200, size=(6, 20, 24)).astype(np.uint8)
    lab = np.zeros((6, 20, 24), np.int8)
    lab[2, 5:10, 5:10] = 1
    return img, lab


def one_line(msg: str) -> str:
    assert "\n" not in msg.strip()
    return msg


def test_truncated_gzip_names_the_file(tmp_path, video):
    p = save(tmp_path / "p-1-4_image.nii.gz", video[0], np.uint8)
    p.write_bytes(p.read_bytes()[:200])
    with pytest.raises(DataError, match="Cannot read image file .*p-1-4_image.nii.gz") as e:
        load_video(p, None, 4, cache_root=tmp_path / "c")
    one_line(str(e.value))


def test_label_shape_mismatch(tmp_path, video):
    img = save(tmp_path / "v_image.nii.gz", video[0], np.uint8)
    lab = save(tmp_path / "v_label.nii.gz", video[1][:, :, :20], np.int8)
    with pytest.raises(DataError, match=r"v_label.nii.gz: shape .* differs from its image"):
        load_video(img, lab, 4, cache_root=tmp_path / "c")


def test_label_values_out_of_range(tmp_path, video):
    img = save(tmp_path / "v_image.nii.gz", video[0], np.uint8)
    bad = video[1].copy()
    bad[3, 0, 0] = 7
    lab = save(tmp_path / "v_label.nii.gz", bad, np.int8)
    with pytest.raises(DataError, match=r"v_label.nii.gz: values must be in 0..4, found 0..7"):
        load_video(img, lab, 4, cache_root=tmp_path / "c")


def test_non_uint8_image(tmp_path, video):
    img = save(tmp_path / "v_image.nii.gz", video[0].astype(np.int16) * 3, np.int16)
    with pytest.raises(DataError, match=r"v_image.nii.gz: expected uint8 pixels, got int16"):
        load_video(img, None, 4, cache_root=tmp_path / "c")


def test_empty_site_folder(tmp_path):
    root = tmp_path / "cardiacUDC_dataset"
    (root / "Site_G_29").mkdir(parents=True)
    with pytest.raises(DataError, match=r"Site_G_29 holds no \*_image.nii.gz files"):
        reg.list_videos(root, ["Site_G_29"])
    with pytest.raises(DataError, match="Site folder missing: .*Site_G_100"):
        reg.list_videos(root, ["Site_G_100"])


def test_missing_dataset_root_explains_dataset_path(tiny_config, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("DATASET_PATH", raising=False)
    code = cli.main(["--config_file", str(tiny_config), "--output_dir", str(tmp_path / "r"), *TINY_OVERRIDES,
                     "data.train=[cardiac_udc_random_train]", "data.evaluate=[cardiac_udc_random_test]"])
    err = one_line(capsys.readouterr().err)
    assert code == 1 and "DATASET_PATH" in err and "echo_synth" in err
    monkeypatch.setenv("DATASET_PATH", str(tmp_path / "nowhere"))
    assert cli.main(["--config_file", str(tiny_config), "--output_dir", str(tmp_path / "r2"), *TINY_OVERRIDES,
                     "data.train=[cardiac_udc_site_train]"]) == 1
    assert "nowhere/cardiacUDC_dataset" in capsys.readouterr().err


@pytest.mark.parametrize("override,expected", [
    ("train.max_itr=5", "did you mean 'train.max_iter'"),
    ("train.max_iter=abc", "expected int, got str 'abc'"),
    ("model.name=UNetBaselin", "did you mean 'UNetBaseline'"),
    ("data.train=[echo_synth_random_trian]", "did you mean 'echo_synth_random_train'"),
])
def test_bad_config_and_registry_names(synth_root, tiny_config, tmp_path, capsys, override, expected):
    code = cli.main(["--config_file", str(tiny_config), "--output_dir", str(tmp_path / "r"), *TINY_OVERRIDES,
                     override])
    err = one_line(capsys.readouterr().err)
    assert code == 1 and expected in err


def test_checkpoint_of_another_model_and_corrupt_checkpoint(synth_root, tiny_config, tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(["--config_file", str(tiny_config), "--output_dir", str(out), *TINY_OVERRIDES,
                     "train.max_iter=1", "train.eval_period=0"]) == 0
    final = out / "checkpoints" / "model_final.pth"
    ck = load_checkpoint(final)
    ck["model_name"] = "LGRNet"
    foreign = tmp_path / "foreign.pth"
    torch.save(ck, foreign)
    capsys.readouterr()
    assert cli.main(["--config_file", str(tiny_config), "--trainer_mode", "eval", "--eval_path", str(foreign),
                     "--output_dir", str(tmp_path / "e1"), *TINY_OVERRIDES]) == 1
    assert "holds a 'LGRNet' model, but the config builds 'UNetBaseline'" in one_line(capsys.readouterr().err)
    assert cli.main(["--config_file", str(tiny_config), "--trainer_mode", "eval", "--eval_path", str(final),
                     "--output_dir", str(tmp_path / "e2"), *TINY_OVERRIDES, "model.decoder_channels=[64,32,16,8,8]"]) == 1
    assert "does not fit model 'UNetBaseline'" in one_line(capsys.readouterr().err)
    broken = tmp_path / "broken.pth"
    broken.write_bytes(final.read_bytes()[:1000])
    assert cli.main(["--trainer_mode", "eval", "--eval_path", str(broken), "--output_dir", str(tmp_path / "e3")]) == 1
    assert "broken.pth is corrupt or truncated" in one_line(capsys.readouterr().err)
    assert final.is_file()  # nothing on disk was touched
