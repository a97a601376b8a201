"""VideoSegEvaluator: reductions against hand-computed numbers, files written, exactly-once counting, 2-rank gather."""
import csv
import json
import math
import pickle

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from core.registry import EVALUATORS
from evaluators.video_seg import VideoSegEvaluator

CLASSES = ["LV", "LA", "RA", "RV"]
K = len(CLASSES)


def one_hot_probs(labels: torch.Tensor, k: int = K) -> torch.Tensor:
    """labels [..., H, W] in 0..K -> probs [..., K, H, W] (background dropped)."""
    return F.one_hot(labels.long(), k + 1).movedim(-1, -3)[..., 1:, :, :].float()


def make_batch(samples: list[dict], t_len: int = 3, clip_t: int = 1) -> tuple[dict, dict]:
    """samples: dicts with sample_id, video_id, gt (H0×W0 labels) and pred (H×W labels at model resolution, used
    for every clip frame) or probs (T×K×H×W). Returns (batch, outputs) following the data contract."""
    probs, metas, gts = [], [], []
    for s in samples:
        p = s["probs"] if "probs" in s else one_hot_probs(s["pred"])[None].repeat(t_len, 1, 1, 1)
        probs.append(p)
        gts.append(s["gt"].long()[None])  # S×H0×W0, S = 1
        metas.append(dict(sample_id=s["sample_id"], video_id=s["video_id"], site=s.get("site", "Site_A"),
                          frame_idx=10 + s["sample_id"], num_frames=40))
    probs = torch.stack(probs)  # B×T×K×H×W
    b, t, _, h, w = probs.shape
    g = torch.Generator().manual_seed(0)
    batch = dict(video=torch.rand(b, t, 3, h, w, generator=g), masks=probs > 0.5,
                 has_ann=torch.zeros(b, t, dtype=torch.bool), scored=torch.zeros(b, t, dtype=torch.bool),
                 frame_idx=torch.arange(t).repeat(b, 1) + 5, meta=metas, gt_full=gts)
    batch["has_ann"][:, clip_t] = True
    batch["scored"][:, clip_t] = True
    return batch, dict(probs=probs)


# 4×4 hand-computed example (see test_metrics): Dice [3/4, 6/7, NaN, 0], IoU [3/5, 3/4, NaN, 0]
PRED0 = torch.tensor([[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 2, 2], [0, 0, 2, 0]])
GT0 = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0], [0, 0, 2, 2], [4, 0, 2, 2]])
# perfect on classes 1 and 3 only: Dice [1, NaN, 1, NaN]
GT1 = torch.tensor([[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 3, 3], [0, 0, 3, 3]])
# nothing predicted, GT has class 2: Dice [NaN, 0, NaN, NaN]
GT2 = torch.tensor([[0, 0, 0, 0], [0, 2, 2, 0], [0, 2, 2, 0], [0, 0, 0, 0]])
PARTIAL = [dict(sample_id=0, video_id="Site_A/p1", pred=PRED0, gt=GT0),
           dict(sample_id=1, video_id="Site_A/p1", pred=GT1, gt=GT1),
           dict(sample_id=2, video_id="Site_B/p2", site="Site_B", pred=torch.zeros(4, 4), gt=GT2)]


def run(evaluator: VideoSegEvaluator, *batches) -> dict:
    evaluator.reset()
    for batch, outputs in batches:
        evaluator.process(batch, outputs)
    return evaluator.evaluate()


def test_registered_under_both_names():
    assert EVALUATORS.get("VideoSegEvaluator") is VideoSegEvaluator
    assert EVALUATORS.get("video_seg") is VideoSegEvaluator


def test_perfect_predictions_score_one_with_resize_to_native():
    g = torch.Generator().manual_seed(0)
    samples = []
    for i in range(4):
        small = torch.randint(0, K + 1, (8, 8), generator=g)
        gt = small.repeat_interleave(2, 0).repeat_interleave(2, 1)  # native 16×16, model 8×8
        samples.append(dict(sample_id=i, video_id=f"v{i // 2}", pred=small, gt=gt))
    res = run(VideoSegEvaluator("toy", CLASSES, num_samples=4), make_batch(samples[:3]), make_batch(samples[3:]))
    for key in ["mDice", "mIoU", "frame_mDice", "frame_mIoU", "video_mDice", "video_mIoU"] + \
               [f"{m}_{c}" for m in ("Dice", "IoU") for c in CLASSES]:
        assert res[key] == 1.0, key
    assert res["num_samples"] == 4 and res["num_videos"] == 2
    assert all(type(v) in (float, int) for v in res.values())


def test_partial_prediction_matches_hand_computed_numbers():
    ev = VideoSegEvaluator("toy", CLASSES)
    res = run(ev, make_batch(PARTIAL))
    assert res["Dice_LV"] == pytest.approx((3 / 4 + 1) / 2)
    assert res["Dice_LA"] == pytest.approx((6 / 7 + 0) / 2)
    assert res["Dice_RA"] == pytest.approx(1.0)  # only sample 1 has RA
    assert res["Dice_RV"] == pytest.approx(0.0)  # only sample 0 has RV (missed)
    assert res["IoU_LV"] == pytest.approx((3 / 5 + 1) / 2)
    assert res["IoU_LA"] == pytest.approx((3 / 4 + 0) / 2)
    assert res["mDice"] == pytest.approx(((3 / 4 + 1) / 2 + (6 / 7) / 2 + 1 + 0) / 4)
    assert res["mIoU"] == pytest.approx(((3 / 5 + 1) / 2 + (3 / 4) / 2 + 1 + 0) / 4)
    s0 = (3 / 4 + 6 / 7 + 0) / 3  # sample 0's mean over its present classes
    assert res["frame_mDice"] == pytest.approx((s0 + 1 + 0) / 3)
    assert res["video_mDice"] == pytest.approx(((s0 + 1) / 2 + 0) / 2)
    assert res["num_samples"] == 3 and res["num_videos"] == 2
    assert ev.results == res


def test_class_absent_from_whole_dataset_is_nan_and_null_in_json(tmp_path):
    gt = torch.tensor([[1, 1], [0, 0]])
    res = run(VideoSegEvaluator("toy", CLASSES, output_dir=tmp_path, num_vis=0),
              make_batch([dict(sample_id=0, video_id="v", pred=gt, gt=gt)]))
    assert res["Dice_LV"] == 1.0 and math.isnan(res["Dice_LA"])
    assert res["mDice"] == 1.0  # NaN classes left out of the class mean
    assert json.loads((tmp_path / "metrics.json").read_text())["Dice_LA"] is None


def test_files_written_with_expected_keys(tmp_path):
    run(VideoSegEvaluator("toy", CLASSES, output_dir=tmp_path, num_vis=0), make_batch(PARTIAL))
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    expected = {"mDice", "mIoU", "frame_mDice", "frame_mIoU", "video_mDice", "video_mIoU", "num_samples",
                "num_scored_frames", "num_videos"} | {f"{m}_{c}" for m in ("Dice", "IoU") for c in CLASSES}
    assert set(metrics) == expected | {"class_names"} and metrics["num_samples"] == 3
    assert metrics["class_names"] == CLASSES  # the table's column order (the file's keys are sorted)
    with open(tmp_path / "per_video.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["video_id", "site", "num_frames_scored"] + [f"Dice_{c}" for c in CLASSES] + \
        [f"IoU_{c}" for c in CLASSES] + ["mDice", "mIoU"]
    assert [(r["video_id"], r["site"], r["num_frames_scored"]) for r in rows] == \
        [("Site_A/p1", "Site_A", "2"), ("Site_B/p2", "Site_B", "1")]
    assert float(rows[0]["Dice_LV"]) == pytest.approx(0.875)
    with open(tmp_path / "per_sample.csv") as f:
        samples = list(csv.DictReader(f))
    assert [int(r["sample_id"]) for r in samples] == [0, 1, 2]
    assert float(samples[0]["Dice_LA"]) == pytest.approx(6 / 7, abs=1e-6)
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave no temp files


def test_duplicate_sample_ids_counted_once():
    ev = VideoSegEvaluator("toy", CLASSES, num_samples=3)
    res = run(ev, make_batch(PARTIAL), make_batch(PARTIAL[:2]))  # a padded sampler repeats samples
    assert res["num_samples"] == 3
    assert res == run(VideoSegEvaluator("toy", CLASSES), make_batch(PARTIAL))


def test_missing_samples_raise_naming_dataset_and_count():
    with pytest.raises(RuntimeError, match=r"cardiac_test.*2 missing"):
        run(VideoSegEvaluator("cardiac_test", CLASSES, num_samples=5), make_batch(PARTIAL))
    with pytest.raises(RuntimeError, match="no samples"):
        VideoSegEvaluator("cardiac_test", CLASSES).evaluate()


def test_scoring_an_unannotated_frame_is_an_error():
    batch, outputs = make_batch(PARTIAL)
    batch["has_ann"][:] = False
    with pytest.raises(ValueError, match="no annotation"):
        VideoSegEvaluator("toy", CLASSES).process(batch, outputs)


def test_a_sample_with_several_scored_frames_scores_like_one_sample_per_frame(tmp_path):
    # one "whole video" sample scoring clip frames 0 and 2 (PRED0 vs GT0, GT1 vs GT1) against two one-frame samples
    probs = torch.stack([one_hot_probs(PRED0), one_hot_probs(PRED0), one_hot_probs(GT1)])[None]  # 1×3×K×4×4
    batch = dict(video=torch.rand(1, 3, 3, 4, 4), masks=probs > 0.5, has_ann=torch.tensor([[True, False, True]]),
                 scored=torch.tensor([[True, False, True]]), frame_idx=torch.tensor([[7, 8, 9]]),
                 meta=[dict(sample_id=0, video_id="Site_A/p1", site="Site_A", frame_idx=7, num_frames=40)],
                 gt_full=[torch.stack([GT0, GT1])])
    whole = run(VideoSegEvaluator("toy", CLASSES, output_dir=tmp_path, num_samples=1, num_vis=1),
                (batch, dict(probs=probs)))
    per_frame = run(VideoSegEvaluator("toy", CLASSES, num_samples=2), make_batch(PARTIAL[:2]))
    for k in ("mDice", "mIoU", "Dice_LV", "Dice_LA", "frame_mDice", "video_mDice"):
        assert whole[k] == pytest.approx(per_frame[k]), k
    assert whole["num_samples"] == 1 and whole["num_scored_frames"] == 2 and per_frame["num_scored_frames"] == 2
    with open(tmp_path / "per_sample.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["sample_id"], r["frame_idx"]) for r in rows] == [("0", "7"), ("0", "9")]  # one row per scored frame
    assert float(rows[0]["Dice_LA"]) == pytest.approx(6 / 7, abs=1e-6)
    assert len(list((tmp_path / "vis").glob("*.mp4"))) == 1
    bad = {**batch, "gt_full": [GT0[None]]}  # one ground truth for two scored frames
    with pytest.raises(ValueError, match=r"gt_full must be S×H0×W0 with S = 2 scored frames, got \(1, 4, 4\)"):
        VideoSegEvaluator("toy", CLASSES).process(bad, dict(probs=probs))
    with pytest.raises(ValueError, match="sample 0 has no scored frame"):
        VideoSegEvaluator("toy", CLASSES).process({**batch, "scored": torch.zeros(1, 3, dtype=torch.bool)},
                                                  dict(probs=probs))


def test_overlay_video_written_and_readable(tmp_path):
    t_len = 5
    gt = torch.zeros(48, 64, dtype=torch.long)
    gt[8:30, 10:30], gt[30:44, 34:60] = 1, 4
    pred = gt[::2, ::2]  # model resolution 24×32
    samples = [dict(sample_id=0, video_id="Site_G_29/patient-3-4", pred=pred, gt=gt),
               dict(sample_id=1, video_id="Site_G_29/patient-3-4", pred=pred, gt=gt)]
    run(VideoSegEvaluator("toy", CLASSES, output_dir=tmp_path, num_vis=1, vis_fps=4),
        make_batch(samples, t_len=t_len, clip_t=2))
    files = sorted((tmp_path / "vis").iterdir())
    assert [f.name for f in files] == ["Site_G_29_patient-3-4_f10.mp4"]  # only sample_id < num_vis
    cap = cv2.VideoCapture(str(files[0]))
    assert cap.isOpened()
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    assert len(frames) == t_len and frames[0].shape == (24 * 11, 32 * 11, 3)  # upscaled to a 256+ short side


# ---- two processes (gloo) -------------------------------------------------------------------------------------

def random_sample(sid: int) -> dict:
    """Deterministic sample: random 16×16 GT, noisy softmax probabilities at model resolution 8×8."""
    g = torch.Generator().manual_seed(100 + sid)
    gt = torch.randint(0, K + 1, (16, 16), generator=g)
    logits = 3 * one_hot_probs(gt[::2, ::2])[None].repeat(3, 1, 1, 1) + torch.randn(3, K, 8, 8, generator=g)
    probs = torch.cat([torch.zeros(3, 1, 8, 8), logits], 1).softmax(1)[:, 1:]
    return dict(sample_id=sid, video_id=f"v{sid % 2}", probs=probs, gt=gt)


SHARDS = {0: [0, 1, 2], 1: [3, 4]}  # uneven, disjoint
PADDED = {0: [0, 1, 2], 1: [3, 4, 0]}  # rank 1 padded with a repeat of sample 0


def _dist_worker(rank: int, world_size: int, tmp: str) -> None:
    import torch.distributed as dist
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{tmp}/rendezvous", rank=rank, world_size=world_size)
    try:
        out = {}
        for name, shards in (("disjoint", SHARDS), ("padded", PADDED)):
            ev = VideoSegEvaluator("toy", CLASSES, output_dir=f"{tmp}/{name}", num_samples=5, num_vis=5)
            out[name] = run(ev, make_batch([random_sample(i) for i in shards[rank]]))
        with open(f"{tmp}/rank{rank}.pkl", "wb") as f:
            pickle.dump(out, f)
    finally:
        dist.destroy_process_group()


def test_two_process_gather_counts_each_sample_once_and_matches_single_process(tmp_path):
    import torch.multiprocessing as mp
    mp.spawn(_dist_worker, args=(2, str(tmp_path)), nprocs=2, join=True)
    single = run(VideoSegEvaluator("toy", CLASSES, num_samples=5), make_batch([random_sample(i) for i in range(5)]))
    assert 0 < single["mDice"] < 1
    for rank in range(2):
        with open(tmp_path / f"rank{rank}.pkl", "rb") as f:
            res = pickle.load(f)
        for name in ("disjoint", "padded"):
            assert res[name]["num_samples"] == 5
            assert res[name] == pytest.approx(single), (rank, name)
    # the main process wrote the files, including overlays of samples that rank 1 processed
    assert len(list((tmp_path / "disjoint" / "vis").glob("*.mp4"))) == 5
    assert json.loads((tmp_path / "disjoint" / "metrics.json").read_text())["num_samples"] == 5


def test_hd95_in_mm_when_the_meta_has_a_pixel_size_and_a_missed_class_scores_the_diagonal():
    from evaluators.metrics import hd95

    batch, outputs = make_batch(PARTIAL)
    for m in batch["meta"]:
        m["spacing"] = (0.5, 0.25)
    res = run(VideoSegEvaluator("toy", CLASSES), (batch, outputs))
    diagonal = math.hypot(4 * 0.5, 4 * 0.25)
    # class LV (1): frames 0 and 1 have it in both masks, frame 2 in neither
    want_lv = [hd95(PRED0 == 1, GT0 == 1, spacing=(0.5, 0.25)), hd95(GT1 == 1, GT1 == 1, spacing=(0.5, 0.25))]
    assert res["HD95_LV"] == pytest.approx(sum(want_lv) / 2) and want_lv[1] == 0
    # class LA (2): frame 0 both, frame 2 only in the ground truth (missed): the diagonal
    want_la = [hd95(PRED0 == 2, GT0 == 2, spacing=(0.5, 0.25)), diagonal]
    assert res["HD95_LA"] == pytest.approx(sum(want_la) / 2)
    assert res["HD95_RV"] == pytest.approx(diagonal)  # frame 0: RV in the ground truth only
    assert res["mHD95"] == pytest.approx(np.nanmean([res[f"HD95_{c}"] for c in CLASSES]))
    without = run(VideoSegEvaluator("toy", CLASSES), make_batch(PARTIAL))
    assert not any(k.startswith(("HD95", "mHD95")) for k in without)  # no pixel size, no HD95


def test_the_model_may_leave_scored_frames_out():
    """outputs['scored'] (a subset of the batch's, e.g. a tracker's prompt frame) removes frames and their GT rows."""
    batch, outputs = make_batch([dict(sample_id=0, video_id="v", pred=GT1, gt=GT1)], t_len=3, clip_t=1)
    batch["has_ann"][:, :] = True
    batch["scored"][:, :] = True
    batch["gt_full"] = [torch.stack([GT0, GT1, GT1]).long()]  # frame 0's truth differs from the prediction
    ev = VideoSegEvaluator("toy", CLASSES)
    assert run(ev, (batch, outputs))["mDice"] < 1
    keep = torch.tensor([[False, True, True]])
    res = run(ev, (batch, {**outputs, "scored": keep.float()}))  # the evaluation loop hands outputs as float
    assert res["mDice"] == 1.0 and res["num_scored_frames"] == 2
    with pytest.raises(ValueError, match=r"marks clip frames \[1\]"):
        b2 = dict(batch, scored=torch.tensor([[True, False, True]]))
        b2["gt_full"] = [torch.stack([GT0, GT1]).long()]
        run(ev, (b2, {**outputs, "scored": keep}))
    with pytest.raises(ValueError, match="leaves no frame"):
        run(ev, (batch, {**outputs, "scored": torch.zeros(1, 3, dtype=torch.bool)}))
