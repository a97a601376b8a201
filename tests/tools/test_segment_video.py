"""tools/segment_video.py: whole-video labels in the dataset's layout, scored on the annotated frames."""
from __future__ import annotations

import nibabel as nib
import numpy as np

import main as cli
from tests.conftest import TINY_OVERRIDES
from tools import segment_video


def test_segments_a_whole_video_and_scores_annotated_frames(synth_root, tiny_config, tmp_path, capsys):
    run = tmp_path / "run"
    assert cli.main(["--config_file", str(tiny_config), "--output_dir", str(run), *TINY_OVERRIDES,
                     "train.max_iter=1", "train.eval_period=-1"]) == 0
    video = sorted((synth_root / "cardiacUDC_dataset" / "Site_G_29").glob("*_image.nii.gz"))[0]
    capsys.readouterr()
    assert segment_video.main(["--eval_path", str(run / "checkpoints" / "model_final.pth"), "--video", str(video),
                               "--window", "6", "--overlap", "2", "--out_dir", str(tmp_path / "pred")]) == 0
    pred = nib.load(str(tmp_path / "pred" / video.name.replace("_image", "_pred")))
    src = nib.load(str(video))
    assert pred.shape == src.shape and pred.get_data_dtype() == np.int8
    arr = np.asarray(pred.dataobj)
    assert arr.min() >= 0 and arr.max() <= 4
    out = capsys.readouterr().out
    assert "annotated frames" in out and "mDice" in out
    assert segment_video.main(["--eval_path", str(tmp_path / "missing.pth"), "--video", str(video)]) == 1
