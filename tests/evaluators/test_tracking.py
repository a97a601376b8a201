"""TrackingEvaluator: lost / area-consistency / area-jitter against hand-computed numbers on tiny videos, frames the
model leaves out (outputs["scored"]), NaN for absent classes, files, gather, registry build, and running next to
VideoSegEvaluator in the evaluation loop."""
import csv
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from core import comm
from core.errors import ConfigError
from core.registry import EVALUATORS, build
from evaluators.tracking import TrackingEvaluator, video_tracking_metrics
from evaluators.video_seg import VideoSegEvaluator

TWO = ["LV", "LA"]
ONE = ["LV"]
METRIC_KEYS = [f"{m}_{c}" for m in ("lost", "area_consistency", "area_jitter") for c in TWO] + \
    ["mLost", "mAreaConsistency", "mAreaJitter"]


def one_hot_probs(labels: torch.Tensor, k: int) -> torch.Tensor:
    """labels [..., H, W] in 0..k -> probs [..., k, H, W] (background dropped)."""
    return F.one_hot(labels.long(), k + 1).movedim(-1, -3)[..., 1:, :, :].float()


def area_map(a1: int = 0, a2: int = 0, h: int = 8, w: int = 8) -> torch.Tensor:
    """H×W labels: class 1 on the first ``a1`` pixels in raster order, class 2 on the last ``a2``."""
    lab = torch.zeros(h * w, dtype=torch.long)
    lab[:a1] = 1
    if a2:
        lab[h * w - a2:] = 2
    return lab.view(h, w)


def row_map(i: int, h: int = 8, w: int = 8) -> torch.Tensor:
    """Class 1 on row ``i`` only: a structure that moves, so a misaligned ground truth scores Dice 0."""
    lab = torch.zeros(h, w, dtype=torch.long)
    lab[i] = 1
    return lab


def make_video(gts, preds, k: int, ts=None, sample_id: int = 0, video_id: str = "Site_A/v0"):
    """gts: label maps of the scored frames (frame order); preds: label maps of all T clip frames (model
    resolution); ts: the scored clip positions (default all). Returns (batch, outputs) like the whole-video
    protocol (batch size 1)."""
    t_len = len(preds)
    ts = list(range(t_len)) if ts is None else list(ts)
    assert len(gts) == len(ts)
    scored = torch.zeros(1, t_len, dtype=torch.bool)
    scored[0, ts] = True
    batch = dict(video=torch.zeros(1, t_len, 3, *preds[0].shape), scored=scored, has_ann=scored.clone(),
                 frame_idx=torch.arange(t_len)[None],
                 meta=[dict(sample_id=sample_id, video_id=video_id, site="Site_A", frame_idx=ts[0],
                            num_frames=t_len)],
                 gt_full=[torch.stack(gts)])
    return batch, dict(probs=one_hot_probs(torch.stack(preds), k)[None])


def run(ev: TrackingEvaluator, *batches) -> dict:
    ev.reset()
    for batch, outputs in batches:
        ev.process(batch, outputs)
    return ev.evaluate()


def test_registered_importable_and_built_by_name_like_the_evaluation_builder(tmp_path):
    import evaluators

    assert evaluators.TrackingEvaluator is TrackingEvaluator
    assert EVALUATORS.get("TrackingEvaluator") is TrackingEvaluator and EVALUATORS.get("tracking") is TrackingEvaluator
    # exactly the keywords trainers.evaluation.evaluate_all passes, plus a shared num_vis from the config
    ev = build(EVALUATORS, dict(name="TrackingEvaluator", lost_threshold=0.3, num_vis=2),
               key="data.evaluate[toy].evaluator", dataset_name="toy", class_names=TWO, colors=[(255, 0, 0)],
               output_dir=tmp_path, num_samples=1, vis_ids=[0])
    assert isinstance(ev, TrackingEvaluator) and ev.lost_threshold == 0.3 and ev.output_dir == tmp_path
    gt = area_map(10, 5)
    res = run(ev, make_video([gt], [gt], 2))
    assert res["lost_LV"] == 0 and (tmp_path / "tracking.json").is_file()
    with pytest.raises(ConfigError, match="lost_treshold.*lost_threshold"):  # config keys still checked
        build(EVALUATORS, dict(name="tracking", lost_treshold=0.3), dataset_name="toy", class_names=TWO)
    for bad in (0, 1.5, "0.5", True):
        with pytest.raises(ConfigError, match="lost_threshold"):
            TrackingEvaluator("toy", TWO, lost_threshold=bad)


def test_perfect_prediction_scores_zero_everywhere_with_resize_to_native():
    small = [area_map(a1, a2) for a1, a2 in zip([10, 14, 20, 18, 12, 16], [5, 5, 8, 3, 9, 4])]
    gts = [s.repeat_interleave(2, 0).repeat_interleave(2, 1) for s in small]  # native 16×16, model 8×8
    res = run(TrackingEvaluator("toy", TWO, num_samples=1), make_video(gts, small, 2))
    for key in METRIC_KEYS:
        assert res[key] == 0.0, key
    assert res["num_tracking_videos"] == 1 and res["num_tracking_scored_frames"] == 6
    assert all(type(v) in (float, int) for v in res.values())


def test_dropping_class_1_on_2_of_6_frames_loses_it_on_exactly_a_third():
    gts = [area_map(a1, a2) for a1, a2 in zip([10, 14, 20, 18, 12, 16], [5, 5, 8, 3, 9, 4])]
    preds = [torch.where(g == 1, 0, g) if t in (1, 4) else g for t, g in enumerate(gts)]
    ev = TrackingEvaluator("toy", TWO)
    res = run(ev, make_video(gts, preds, 2))
    assert res["lost_LV"] == 2 / 6 and res["lost_LA"] == 0.0
    assert res["mLost"] == pytest.approx(1 / 6)
    assert res["area_consistency_LA"] == 0.0 and res["area_jitter_LA"] == 0.0
    # LV's area 10, 0, 20, 18, 0, 16 against 10, 14, 20, 18, 12, 16 (mean 15): hand-computed
    assert res["area_consistency_LV"] == pytest.approx((14 + 14 + 0 + 12 + 12) / 15 / 5)
    assert res["area_jitter_LV"] == pytest.approx(((30 + 22 + 16 + 34) - (2 + 8 + 4 + 10)) / 4 / 15)


def test_lost_is_strictly_below_the_threshold():
    gt = area_map(4)  # class 1 on pixels 0..3
    pred = torch.zeros(8, 8, dtype=torch.long)
    pred.view(-1)[2:6] = 1  # Dice 2·2 / (4 + 4) = 0.5
    assert run(TrackingEvaluator("toy", ONE), make_video([gt], [pred], 1))["lost_LV"] == 0.0
    res = run(TrackingEvaluator("toy", ONE, lost_threshold=0.6), make_video([gt], [pred], 1))
    assert res["lost_LV"] == 1.0
    # one frame: no pair, no triple
    assert math.isnan(res["area_consistency_LV"]) and math.isnan(res["area_jitter_LV"])


def test_constant_area_offset_is_consistent_and_an_oscillating_area_jitters():
    g_areas = [10, 12, 14, 16, 18]  # linear growth: no second difference
    gts = [area_map(a) for a in g_areas]
    offset = run(TrackingEvaluator("toy", ONE), make_video(gts, [area_map(a + 3) for a in g_areas], 1))
    assert offset["area_consistency_LV"] == 0.0 and offset["area_jitter_LV"] == 0.0 and offset["lost_LV"] == 0.0
    osc = run(TrackingEvaluator("toy", ONE), make_video(gts, [area_map(a) for a in [10, 15, 14, 19, 18]], 1))
    # Δpred 5, -1, 5, -1 vs Δgt 2, 2, 2, 2: error 3 per pair, mean GT area 14
    assert osc["area_consistency_LV"] == pytest.approx(3 / 14)
    # second differences of the prediction -6, 6, -6, of the truth 0: 6 / 14
    assert osc["area_jitter_LV"] == pytest.approx(3 / 7) and osc["area_jitter_LV"] > 0
    assert osc["mAreaConsistency"] == osc["area_consistency_LV"] and osc["mAreaJitter"] == osc["area_jitter_LV"]


def test_frame_gaps_normalise_consistency_and_break_jitter_triples():
    # sparse annotations at frames 0, 2, 6: the truth grows 2 px per frame, the prediction is frozen at 10
    gts = [area_map(a) for a in (10, 14, 22)]
    preds = [area_map(10)] * 7
    res = run(TrackingEvaluator("toy", ONE), make_video(gts, preds, 1, ts=[0, 2, 6]))
    gbar = (10 + 14 + 22) / 3
    assert res["area_consistency_LV"] == pytest.approx((4 / gbar / 2 + 8 / gbar / 4) / 2)  # 3/23 both pairs
    assert res["area_consistency_LV"] == pytest.approx(3 / 23)
    assert math.isnan(res["area_jitter_LV"])  # no three adjacent scored frames
    # frames 0, 1, 2, 5: only (0, 1, 2) is a jitter triple; the gap-3 pair counts once, divided by 3
    gts = [area_map(a) for a in (10, 10, 10, 30)]
    res = run(TrackingEvaluator("toy", ONE), make_video(gts, [area_map(10)] * 6, 1, ts=[0, 1, 2, 5]))
    assert res["area_jitter_LV"] == 0.0  # (1, 2, 5) would have given -20 / 15
    assert res["area_consistency_LV"] == pytest.approx((0 + 0 + 20 / 15 / 3) / 3)
    with pytest.raises(ValueError, match="strictly increasing"):
        video_tracking_metrics([0, 2, 2], np.ones((3, 1)), np.ones((3, 1)), np.ones((3, 1)))


def test_outputs_scored_leaves_frames_out_drops_their_ground_truth_and_must_be_a_subset():
    gts = [row_map(i) for i in range(6)]
    preds = [torch.zeros(8, 8, dtype=torch.long) if t in (0, 3) else g for t, g in enumerate(gts)]
    batch, outputs = make_video(gts, preds, 1, sample_id=7)
    assert run(TrackingEvaluator("toy", ONE), (batch, outputs))["lost_LV"] == 2 / 6
    keep = batch["scored"].clone()
    keep[0, 0] = False  # e.g. the frame prompted with the ground-truth mask
    for kept in (keep, keep.float()):  # the evaluation loop turns every output tensor into float
        ev = TrackingEvaluator("toy", ONE)
        res = run(ev, (batch, {**outputs, "scored": kept}))
        assert res["lost_LV"] == 1 / 5  # a misaligned gt_full row would score Dice 0 everywhere
        assert res["num_tracking_scored_frames"] == 5 and ev._records[0]["ts"] == [1, 2, 3, 4, 5]
    # everything left out: the video is kept, with no frames and NaN metrics
    none = run(TrackingEvaluator("toy", ONE, num_samples=1),
               (batch, {**outputs, "scored": torch.zeros_like(keep)}))
    assert none["num_tracking_videos"] == 1 and none["num_tracking_scored_frames"] == 0
    assert math.isnan(none["lost_LV"]) and math.isnan(none["mLost"])
    # not a subset: frame 5 is not scored in the batch
    sub, sub_out = make_video(gts[:5], preds, 1, ts=range(5), sample_id=7)
    with pytest.raises(ValueError, match=r"toy: sample 7: outputs\['scored'\] marks clip frames \[5\]"):
        TrackingEvaluator("toy", ONE).process(sub, {**sub_out, "scored": torch.ones(1, 6, dtype=torch.bool)})
    with pytest.raises(ValueError, match=r"must be B×T like batch\['scored'\] \(1, 6\), got \(1, 5\)"):
        TrackingEvaluator("toy", ONE).process(batch, {**outputs, "scored": keep[:, :5]})


def test_class_absent_from_the_ground_truth_is_nan_and_left_out_of_the_means(tmp_path):
    gts = [area_map(a) for a in (10, 12, 14)]
    preds = [area_map(10, 3), area_map(12), area_map(14, 5)]  # LA predicted (false positives), never in the GT
    res = run(TrackingEvaluator("toy", TWO, output_dir=tmp_path), make_video(gts, preds, 2))
    for m in ("lost", "area_consistency", "area_jitter"):
        assert math.isnan(res[f"{m}_LA"]), m
    assert res["mLost"] == res["lost_LV"] == 0.0 and res["mAreaConsistency"] == 0.0 and res["mAreaJitter"] == 0.0
    saved = json.loads((tmp_path / "tracking.json").read_text())
    assert saved["lost_LA"] is None and saved["area_jitter_LA"] is None and saved["mLost"] == 0.0
    # a second video that has LA: the dataset's LA values are that video's alone (NaN-aware mean over videos)
    gts2 = [area_map(10, 6)] * 3
    preds2 = [area_map(10, 6), area_map(10), area_map(10, 6)]
    two = run(TrackingEvaluator("toy", TWO), make_video(gts, preds, 2),
              make_video(gts2, preds2, 2, sample_id=1, video_id="Site_A/v1"))
    assert two["lost_LA"] == 1 / 3 and two["lost_LV"] == 0.0 and two["mLost"] == pytest.approx(1 / 6)
    assert two["area_consistency_LA"] == pytest.approx(1.0)  # |-6 - 0| / 6 and |6 - 0| / 6
    assert two["area_jitter_LA"] == pytest.approx(2.0)  # |6 - 0 + 6| / 6
    assert two["num_tracking_videos"] == 2


def test_files_json_and_per_video_csv(tmp_path):
    gts = [area_map(a1, a2) for a1, a2 in zip([10, 14, 20, 18, 12, 16], [5, 5, 8, 3, 9, 4])]
    preds = [torch.where(g == 1, 0, g) if t in (1, 4) else g for t, g in enumerate(gts)]
    res = run(TrackingEvaluator("toy", TWO, output_dir=tmp_path, num_vis=0), make_video(gts, preds, 2),
              make_video(gts[:3], [gts[0]] * 3, 2, sample_id=1, video_id="Site_A/v1"))
    saved = json.loads((tmp_path / "tracking.json").read_text())
    assert set(saved) == set(METRIC_KEYS) | {"num_tracking_videos", "num_tracking_scored_frames", "class_names",
                                             "lost_threshold"}
    assert saved["class_names"] == TWO and saved["lost_threshold"] == 0.5 and saved["num_tracking_videos"] == 2
    assert saved["lost_LV"] == pytest.approx(res["lost_LV"])
    with open(tmp_path / "tracking_per_video.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["sample_id", "video_id", "site", "num_scored_frames",
                             "lost_LV", "lost_LA", "mLost", "area_consistency_LV", "area_consistency_LA",
                             "mAreaConsistency", "area_jitter_LV", "area_jitter_LA", "mAreaJitter"]
    assert [(r["sample_id"], r["video_id"], r["num_scored_frames"]) for r in rows] == \
        [("0", "Site_A/v0", "6"), ("1", "Site_A/v1", "3")]
    assert float(rows[0]["lost_LV"]) == pytest.approx(1 / 3, abs=1e-6)
    assert res["lost_LV"] == pytest.approx((1 / 3 + float(rows[1]["lost_LV"])) / 2)
    assert not list(tmp_path.glob(".*.tmp"))


def test_gathered_ranks_count_each_video_once_and_only_the_main_process_writes(tmp_path, monkeypatch):
    g = torch.Generator().manual_seed(0)
    videos = []
    for sid in range(3):
        gts = [torch.randint(0, 3, (8, 8), generator=g) for _ in range(4)]
        preds = [torch.randint(0, 3, (8, 8), generator=g) for _ in range(4)]
        videos.append(make_video(gts, preds, 2, sample_id=sid, video_id=f"v{sid}"))
    single = run(TrackingEvaluator("toy", TWO, num_samples=3), *videos)
    rank0, rank1 = TrackingEvaluator("toy", TWO), TrackingEvaluator("toy", TWO)
    for v in videos[:2]:
        rank0.process(*v)
    for v in (videos[2], videos[0]):  # rank 1 padded with a repeat of sample 0
        rank1.process(*v)
    monkeypatch.setattr(comm, "all_gather_object", lambda obj: [rank0._records, rank1._records])
    monkeypatch.setattr(comm, "is_main_process", lambda: False)
    ev = TrackingEvaluator("toy", TWO, output_dir=tmp_path, num_samples=3)
    ev.process(*videos[1])
    gathered = ev.evaluate()
    assert gathered == pytest.approx(single, nan_ok=True) and gathered["num_tracking_videos"] == 3
    assert not (tmp_path / "tracking.json").exists()
    with pytest.raises(RuntimeError, match=r"toy: evaluated 3 distinct samples but the dataset has 4 \(1 missing"):
        TrackingEvaluator("toy", TWO, num_samples=4).evaluate()
    with pytest.raises(RuntimeError, match="no samples"):
        monkeypatch.setattr(comm, "all_gather_object", lambda obj: [obj])
        TrackingEvaluator("toy", TWO).evaluate()


def test_runs_next_to_video_seg_in_the_evaluation_loop():
    from trainers.evaluation import inference_on_dataset

    class PromptedOracle(torch.nn.Module):
        """Ground truth on the prompted frame 0, which it asks to leave out; a frozen mask afterwards."""

        def predict(self, batch):
            probs = one_hot_probs(torch.stack([area_map(10)] * 4), 1)[None]
            scored = batch["scored"].clone()
            scored[:, 0] = False
            return dict(probs=probs, scored=scored)

    batch, _ = make_video([area_map(a) for a in (10, 20, 30, 40)], [area_map(10)] * 4, 1)
    evs = [VideoSegEvaluator("toy", ONE, num_samples=1), TrackingEvaluator("toy", ONE, num_samples=1)]
    res = inference_on_dataset(PromptedOracle(), [batch], evs, torch.device("cpu"), OmegaConf.create(dict(
        enabled=False)))
    assert res["num_scored_frames"] == res["num_tracking_scored_frames"] == 3  # no key clash; both leave frame 0 out
    assert res["lost_LV"] == 1 / 3  # Dice 2·10/30 = 0.67, 2·10/40 = 0.5 (not below), 2·10/50 = 0.4
    assert res["area_consistency_LV"] == pytest.approx(10 / 30)  # |0 - 10| / mean(20, 30, 40) per pair
    assert res["area_jitter_LV"] == 0.0  # both areas linear over frames 1..3
