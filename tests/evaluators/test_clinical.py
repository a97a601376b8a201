"""EF by the single-plane area-length method: the geometry on a drawn ellipse, the evaluator on hand-made
videos, and end to end on the CAMUS fixture, whose EF follows volume ~ scale³ (so the area-length EF of its ground
truth masks must match it)."""
import json
import math

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from core.errors import ConfigError
from evaluators.clinical import EFEvaluator, ejection_fraction, lv_area_length


def ellipse(h, w, a, b, cy=None, cx=None):
    """Boolean H×W mask of an ellipse with vertical semi-axis a and horizontal b (pixels)."""
    m = np.zeros((h, w), np.uint8)
    cv2.ellipse(m, (w // 2 if cx is None else cx, h // 2 if cy is None else cy), (b, a), 0, 0, 360, 1, -1)
    return m.astype(bool)


def test_area_length_of_an_ellipse_is_the_prolate_ellipsoid_volume():
    m = ellipse(120, 80, a=40, b=15)
    area, length, vol = lv_area_length(m)
    a, b = 40.5, 15.5  # a filled raster ellipse reaches half a pixel beyond its semi-axes
    assert area == pytest.approx(math.pi * a * b, rel=0.01)
    assert length == pytest.approx(80, abs=1.5)  # the long axis (between the outline's pixel centres)
    assert vol == pytest.approx(4 / 3 * math.pi * a * b ** 2, rel=0.04)
    # anisotropic pixels: the same ellipse drawn at half height with dy = 2 mm measures the same in mm
    squashed = ellipse(60, 80, a=20, b=15)
    a2, l2, v2 = lv_area_length(squashed, spacing=(2.0, 1.0))
    assert a2 == pytest.approx(area, rel=0.03) and l2 == pytest.approx(length, abs=2.5)
    assert lv_area_length(np.zeros((5, 5), bool)) == (0.0, 0.0, 0.0)
    assert ejection_fraction(100.0, 40.0) == 60.0 and math.isnan(ejection_fraction(0.0, 0.0))


def _video_batch(scales, ed, es, ef, lv_label=1, k=2):
    """One whole-video sample: an ellipse per frame scaled by ``scales``; prediction = ground truth."""
    gts = [torch.from_numpy(ellipse(64, 48, a=int(24 * s), b=int(10 * s)).astype(np.int64)) * lv_label
           for s in scales]
    probs = torch.stack([F.one_hot(g, k + 1).permute(2, 0, 1)[1:].float() for g in gts])[None]  # 1×T×K×H×W
    t = len(scales)
    return dict(video=torch.zeros(1, t, 3, 64, 48), scored=torch.ones(1, t, dtype=torch.bool),
                frame_idx=torch.arange(t)[None], gt_full=[torch.stack(gts)],
                meta=[dict(sample_id=0, video_id="p1", ed=ed, es=es, ef=ef, spacing=(0.5, 0.5))]), dict(probs=probs)


def test_ef_evaluator_on_a_perfect_prediction_and_its_errors(tmp_path):
    scales = [1.0, 0.9, 0.8, 0.7]
    true_ef = 100 * (1 - 0.7 ** 3)
    batch, out = _video_batch(scales, ed=0, es=3, ef=true_ef)
    ev = EFEvaluator("toy", ["LV", "LA"], output_dir=tmp_path)
    ev.process(batch, out)
    res = ev.evaluate()
    assert res["num_ef_videos"] == 1 and res["EF_MAE"] == pytest.approx(res["EF_MAE_gt_masks"])
    assert res["EF_MAE"] < 3.0 and res["LV_area_ED_MAE"] == 0.0  # rasterised ellipses: EF within 3 points
    assert (tmp_path / "ef_per_video.csv").read_text().startswith("sample_id,video_id,ef,")
    one_frame = {**batch, "scored": torch.tensor([[True, False, False, False]]), "gt_full": [batch["gt_full"][0][:1]]}
    ev.reset()
    ev.process(one_frame, out)
    with pytest.raises(ConfigError, match="no sample holds both its ED and ES frames.*per_video=True"):
        ev.evaluate()
    with pytest.raises(ConfigError, match=r"no LV class among \['polyp'\]"):
        EFEvaluator("sunseg", ["polyp"])
    assert EFEvaluator("camus", ["LV_endo", "LV_myo", "LA"]).lv == 1


def test_whole_video_ef_and_hd95_on_the_camus_fixture(tmp_path):
    import main
    from core.catalog import DatasetRoots
    from data_schedule.synthetic.raw_fixtures import write_camus
    from tests.conftest import TINY_OVERRIDES

    info = write_camus(tmp_path / "data" / "CAMUS", patients=(1, 2, 3), frames=6)
    DatasetRoots.set("camus", str(tmp_path / "data"))
    run = tmp_path / "run"
    common = [*TINY_OVERRIDES, "data.num_workers=0", "data.train_mapper.size=[32,32]", "data.eval_mapper.size=[32,32]",
              f"data.roots.camus={tmp_path / 'data'}"]
    assert main.main(["--config_file", "configs/camus/unet_tiny.py", "--trainer_mode", "train_attmpt", "--output_dir",
                      str(run), *common, "train.max_iter=2", "train.eval_period=0",
                      "data.evaluate=[camus_test]"]) == 0
    entry = ("data.evaluate=[{name: camus_test, tag: camus_test_video, per_video: true, "
             "mapper: {name: VideoEvalMapper, size: [32, 32]}, window: {size: 5, overlap: 2}, "
             "evaluator: [{name: VideoSegEvaluator, num_vis: 1}, {name: EFEvaluator}]}]")
    assert main.main(["--trainer_mode", "eval", "--eval_path", str(run / "checkpoints" / "model_final.pth"),
                      "--output_dir", str(tmp_path / "ev"), *common, entry]) == 0
    out = tmp_path / "ev" / "eval" / "camus_test_video"
    m = json.loads((out / "metrics.json").read_text())
    assert m["num_samples"] == 2 and m["num_scored_frames"] == 4  # patient0003, 2 views, ED and ES each
    assert m["num_ef_videos"] == 2 and m["EF_MAE_gt_masks"] < 5.0  # the fixture's EF is the volume ratio
    assert {"EF_MAE", "EF_corr", "HD95_LV_endo", "mHD95", "iteration"} <= set(m)  # CAMUS knows its pixel size
    assert (out / "ef_per_video.csv").is_file() and (out / "per_sample.csv").is_file()
    assert info["patients"]["patient0003"]["EF"] > 0
