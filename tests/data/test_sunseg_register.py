"""The SUN-SEG register on a tiny copy of the public layout (raw_fixtures.write_sunseg): names, one sample per
frame, frames in numeric (not lexical) order, RGB clips and binary masks, every bad input as a one-line DataError,
the data check, and one train + eval run through main."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import main as cli
from core.catalog import BadData, DatasetCatalog, DatasetRoots, MetadataCatalog
from core.registry import MAPPERS, build
from core.structures import collate
from data_schedule.registers import sunseg as reg
from data_schedule.sources.cache import LazyVideo
from data_schedule.sources.nifti import DataError
from data_schedule.synthetic.raw_fixtures import write_sunseg
from tests.conftest import TINY_OVERRIDES

REPO = Path(__file__).resolve().parents[2]
FRAMES, TRAIN_CASES = 6, 2
NAMES = ["sunseg_train", "sunseg_easy_seen_test", "sunseg_easy_unseen_test", "sunseg_hard_seen_test",
         "sunseg_hard_unseen_test"]


def make(base: Path, **kw) -> dict:
    """SUN-SEG fixture under ``base/SUN-SEG``, the family pointed at ``base``."""
    info = write_sunseg(base / "SUN-SEG", train_cases=TRAIN_CASES, test_cases=1, frames=FRAMES, **kw)
    DatasetRoots.set("sunseg", str(base))
    return info


@pytest.fixture
def data(tmp_path, monkeypatch) -> dict:
    monkeypatch.setenv("MEDVIDSEG_CACHE", str(tmp_path / "cache"))
    return make(tmp_path / "data")


def one_line(msg: str) -> str:
    assert "\n" not in msg.strip(), msg
    return msg


def test_names_metadata_and_sample_counts_one_per_frame(data, tmp_path):
    assert set(NAMES) <= set(DatasetCatalog.names())
    for name in NAMES:
        m = MetadataCatalog.get(name)
        assert m.classes == ["polyp"] and m.family == "sunseg" and m.labeled
        assert (m.part, m.mode) == (("train", "train") if name == "sunseg_train" else ("test", "evaluate"))
    counts = {n: len(DatasetCatalog.get(n)) for n in NAMES}
    assert counts == {"sunseg_train": TRAIN_CASES * FRAMES, **{n: FRAMES for n in NAMES[1:]}}
    assert not (tmp_path / "cache").exists()  # listing decodes nothing


def test_meta_fields_and_frames_in_numeric_order(data):
    samples = DatasetCatalog.get("sunseg_train")
    assert [s["sample_id"] for s in samples] == list(range(len(samples)))
    s = samples[0]
    assert set(s) == {"video_id", "case", "site", "set", "frame_idx", "frame_file", "num_frames", "labeled",
                      "cache", "sample_id"}
    assert (s["video_id"], s["case"], s["site"], s["set"]) == ("case1_1", "case1_1", "train", "TrainDataset")
    assert isinstance(s["cache"], LazyVideo) and s["cache"].annotated_frames == list(range(FRAMES))
    truth = data["cases"]["TrainDataset/case1_1"]
    case = [m for m in samples if m["case"] == "case1_1"]
    assert [m["frame_idx"] for m in case] == list(range(FRAMES))
    assert [m["frame_file"] for m in case] == truth["frames"] != sorted(truth["frames"])  # a10 after a9
    assert all(m["cache"] is s["cache"] and m["num_frames"] == FRAMES and m["labeled"] for m in case)
    test = DatasetCatalog.get("sunseg_hard_unseen_test")[0]
    assert (test["site"], test["set"], test["video_id"]) == ("hard_unseen", "TestHardDataset/Unseen", "case4_5")
    # the decoded video follows the names' numbers: frame t is the file truth["frames"][t], in RGB
    image, labels = s["cache"].image(), s["cache"].labels()
    assert image.shape == (FRAMES, 36, 44, 3) and image.dtype == np.uint8 and sorted(labels) == list(range(FRAMES))
    for t, name in enumerate(truth["frames"]):
        assert np.array_equal(image[t], cv2.imread(str(truth["frame_dir"] / name))[:, :, ::-1])
        gt = cv2.imread(str(truth["gt_dir"] / (Path(name).stem + ".png")), cv2.IMREAD_GRAYSCALE)
        assert np.array_equal(labels[t], (gt > 127).astype(np.int8))


def test_eval_mapper_scores_the_centre_frame_with_native_binary_gt(data):
    meta = DatasetCatalog.get("sunseg_easy_seen_test")[1]
    mapper = build(MAPPERS, {"name": "ClipEvalMapper", "clip_len": 5, "size": [32, 40]}, num_classes=1)
    s = mapper(meta)
    assert s["video"].shape == (5, 3, 32, 40) and s["masks"].shape == (5, 1, 32, 40)
    assert s["scored"].nonzero().flatten().tolist() == [2] and s["has_ann"].all()
    assert s["frame_idx"].tolist() == [0, 0, 1, 2, 3]  # clamped at the start, reference frame 1 at the centre
    assert not torch.equal(s["video"][:, 0], s["video"][:, 1])  # colour, not grey repeated
    gt = meta["cache"].labels()[1]
    assert s["gt_full"].shape == (1, 36, 44) and torch.equal(s["gt_full"][0], torch.from_numpy(gt.astype(np.int64)))
    assert set(s["gt_full"].unique().tolist()) == {0, 1} and s["masks"][2].any()


def test_train_mapper_clips_collate(data):
    metas = DatasetCatalog.get("sunseg_train")
    mapper = build(MAPPERS, {"name": "ClipTrainMapper", "clip_len": 3, "size": [32, 32]}, num_classes=1)
    a, b = mapper(metas[0], seed=1), mapper(metas[7], seed=2)
    assert a["video"].shape == (3, 3, 32, 32) and a["masks"].shape == (3, 1, 32, 32) and a["has_ann"].all()
    assert a["masks"].any() and not a["scored"].any()
    batch = collate([a, b])
    assert batch["video"].shape == (2, 3, 3, 32, 32) and [m["video_id"] for m in batch["meta"]] == ["case1_1",
                                                                                                    "case2_1"]


def test_frame_without_gt_is_an_error_or_leaves_the_training_case_out(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDVIDSEG_CACHE", str(tmp_path / "cache"))
    info = make(tmp_path / "data", missing_gt=True)
    gt, frame = info["missing_gt"], info["cases"]["TrainDataset/case1_1"]["frame_dir"] / \
        info["cases"]["TrainDataset/case1_1"]["frames"][1]
    with pytest.raises(DataError) as e:
        DatasetCatalog.get("sunseg_train")
    assert str(frame) in one_line(str(e.value)) and str(gt) in str(e.value)
    BadData.set_policy("skip")
    samples = DatasetCatalog.get("sunseg_train")
    assert {s["case"] for s in samples} == {"case2_1"} and len(samples) == FRAMES
    assert [p for p, _ in BadData.skipped] == [str(info["cases"]["TrainDataset/case1_1"]["frame_dir"])]
    assert str(gt) in BadData.skipped[0][1]
    # test lists never skip
    case = info["cases"]["TestHardDataset/Seen/case1_4"]
    (case["gt_dir"] / (Path(case["frames"][-1]).stem + ".png")).unlink()
    with pytest.raises(DataError, match=r"frame .*image0003\.jpg: its ground truth .*image0003\.png is missing"):
        DatasetCatalog.get("sunseg_hard_seen_test")
    shutil.rmtree(case["gt_dir"])
    with pytest.raises(DataError, match="GT folder .* does not exist"):
        DatasetCatalog.get("sunseg_hard_seen_test")


def test_missing_root_set_folder_and_empty_case(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("DATASET_PATH", raising=False)
    with pytest.raises(DataError, match=r"export DATASET_PATH=\.\.\. or set data\.roots\.sunseg") as e:
        DatasetCatalog.get("sunseg_train")
    one_line(str(e.value))
    assert cli.main(["--config_file", str(REPO / "configs" / "sunseg" / "unet_tiny.py"), "--output_dir",
                     str(tmp_path / "r"), *TINY_OVERRIDES]) == 1
    assert "SUN-SEG root not set: export DATASET_PATH" in one_line(capsys.readouterr().err)
    DatasetRoots.set("sunseg", str(tmp_path / "nowhere"))
    with pytest.raises(DataError, match=r"SUN-SEG folder not found: .*nowhere/SUN-SEG \(data\.roots\.sunseg="):
        DatasetCatalog.get("sunseg_train")
    info = make(tmp_path / "data")
    empty = info["root"] / "TestEasyDataset" / "Unseen" / "Frame" / "case9_9"
    empty.mkdir()
    with pytest.raises(DataError, match=f"case folder {empty}: no .jpg frames"):
        DatasetCatalog.get("sunseg_easy_unseen_test")
    shutil.rmtree(info["root"] / "TestHardDataset")
    with pytest.raises(DataError, match=r"set folder .*TestHardDataset/Unseen/Frame: not found"):
        DatasetCatalog.get("sunseg_hard_unseen_test")


def test_check_data_counts_every_set_and_each_problem(tmp_path):
    from core.config import load_config
    from data_schedule.check_data import check_config_datasets

    base = tmp_path / "data"
    make(base)
    cfg = load_config(REPO / "configs" / "sunseg" / "unet_tiny.py", [f"data.roots.sunseg={base}"])
    text, n = check_config_datasets(cfg)
    assert n == 0 and "No problems found." in text and text.count("Dataset check:") == 1
    report = reg.scan_sunseg(base / "SUN-SEG")
    assert list(report["sites"]) == list(reg.SETS.values())
    assert report["sites"]["TrainDataset"]["frames"] == report["sites"]["TrainDataset"]["annotated_frames"] == 12
    assert report["totals"]["videos"] == 6 and report["totals"]["label_values"] == [0, 1]

    broken = tmp_path / "broken"
    info = make(broken, missing_gt=True)
    (info["root"] / "TestHardDataset" / "Seen" / "Frame" / "case9_9").mkdir()
    cfg = load_config(REPO / "configs" / "sunseg" / "unet_tiny.py", [f"data.roots.sunseg={broken}"])
    text, n = check_config_datasets(cfg)
    report = reg.scan_sunseg(broken / "SUN-SEG")
    assert n == 2 == report["totals"]["problems"]
    reasons = {Path(p["file"]).name: p["reason"] for p in report["problems"]}
    missing = info["cases"]["TrainDataset/case1_1"]["frames"][1]
    assert reasons[missing] == f"frame without its ground truth (expected {info['missing_gt']})"
    assert reasons["case9_9"] == "case folder with no frames"
    assert "2 problems" in text


def test_train_then_eval_the_checkpoint_through_main(data, tmp_path, capsys):
    base = tmp_path / "data"
    config = tmp_path / "unet.py"
    config.write_text(f'_base_ = ["{REPO}/configs/sunseg/unet_tiny.py"]\n')
    out = tmp_path / "run"
    assert cli.main(["--config_file", str(config), "--trainer_mode", "train_attmpt", "--output_dir", str(out),
                     *TINY_OVERRIDES, "train.max_iter=2", "train.eval_period=0", "data.num_workers=0",
                     f"data.roots.sunseg={base}"]) == 0
    metrics = {n: json.loads((out / "eval" / n / "metrics.json").read_text()) for n in NAMES[1:]}
    for m in metrics.values():
        assert m["num_samples"] == FRAMES and 0.0 <= m["Dice_polyp"] <= 1.0 and "Dice_LV" not in m
    capsys.readouterr()
    eval_out = tmp_path / "eval_run"
    assert cli.main(["--trainer_mode", "eval", "--eval_path", str(out / "checkpoints" / "model_final.pth"),
                     "--output_dir", str(eval_out)]) == 0
    for n, m in metrics.items():
        again = json.loads((eval_out / "eval" / n / "metrics.json").read_text())
        assert again["mDice"] == pytest.approx(m["mDice"], abs=1e-9) and again["num_samples"] == FRAMES
    assert "| sunseg_hard_unseen_test |" in capsys.readouterr().out
