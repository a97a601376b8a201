"""The CAMUS register on the tiny raw-layout fixture (``raw_fixtures.write_camus``): names, split sizes, metas,
mapped samples, the ED/ES-file variant, every bad input of the issue, the data check and one train + eval run."""
from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

import main as cli
from core.catalog import BadData, DatasetCatalog, DatasetRoots, MetadataCatalog
from core.config import load_config
from core.registry import MAPPERS, build
from data_schedule.check_data import check_config_datasets
from data_schedule.registers import camus as reg
from data_schedule.sources.nifti import DataError
from data_schedule.synthetic.raw_fixtures import write_camus
from tests.conftest import TINY_OVERRIDES

FRAMES = 6
REPO = Path(__file__).resolve().parents[2]
UNET = str(REPO / "configs" / "camus" / "unet_tiny.py")
SPLIT_OF = {"train": "training", "val": "validation", "test": "testing"}


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MEDVIDSEG_CACHE", str(tmp_path_factory.mktemp("camus_cache")))
        yield


@pytest.fixture(scope="module")
def fixture(tmp_path_factory, cache_dir):
    """3 patients (one per split), both views, 6 frames; patient0003's 4CH clip runs ES -> ED."""
    base = tmp_path_factory.mktemp("camus_base")
    return dict(base=base, **write_camus(base / "CAMUS", patients=(1, 2, 3), frames=FRAMES))


@pytest.fixture
def camus(fixture):
    DatasetRoots.set("camus", str(fixture["base"]))
    return fixture


def broken(tmp_path, **bad):
    """A fresh fixture with a bad input, pointed at by the family's root."""
    info = write_camus(tmp_path / "CAMUS", patients=(1, 2, 3), frames=FRAMES, **bad)
    DatasetRoots.set("camus", str(tmp_path))
    return info


def one_line_error(name: str) -> str:
    with pytest.raises(DataError) as e:
        DatasetCatalog.get(name)
    assert "\n" not in str(e.value)
    return str(e.value)


# ------------------------------------------------------------------------------------------------ lists

def test_names_split_sizes_and_metadata(camus):
    for view in (None, "2CH", "4CH"):
        for part in ("train", "val", "test"):
            for edes in (False, True):
                name = reg.dataset_name(view, part, edes)
                md = MetadataCatalog.get(name)
                assert md.classes == ["LV_endo", "LV_myo", "LA"] and md.family == "camus"
                assert len(set(md.colors)) == 3 and md.mode == ("train" if part == "train" else "evaluate")
                samples = DatasetCatalog.get(name)
                views = 1 if view else 2
                per_video = (2 if edes else FRAMES) if part == "train" else 2
                assert len(samples) == views * per_video, name  # one patient per split in the fixture
                assert {s["patient"] for s in samples} == set(camus["split"][SPLIT_OF[part]])
                assert {s["view"] for s in samples} == ({view} if view else {"2CH", "4CH"})
                assert [s["sample_id"] for s in samples] == list(range(len(samples)))
    assert "camus_2ch_train" in DatasetCatalog and "camus_4ch_edes_test" in DatasetCatalog


def test_train_has_every_frame_and_test_the_ed_es_frames_with_cfg_and_header_facts(camus):
    train = DatasetCatalog.get("camus_train")
    assert [(s["video_id"], s["frame_idx"]) for s in train] == [
        (f"patient0001/{v}", t) for v in ("2CH", "4CH") for t in range(FRAMES)]
    for name in ("camus_val", "camus_test"):
        for s in DatasetCatalog.get(name):
            truth = camus["patients"][s["patient"]]
            tv = truth["views"][s["view"]]
            assert s["video_id"] == f"{s['patient']}/{s['view']}" and s["site"] == s["view"]
            assert (s["ed"], s["es"]) == (tv["ED"] - 1, tv["ES"] - 1)  # 0-based
            assert s["frame_idx"] == (s["ed"] if s["phase"] == "ED" else s["es"])
            assert tv["lv_area"][s["ed"]] == max(tv["lv_area"]) and tv["lv_area"][s["es"]] == min(tv["lv_area"])
            assert s["ef"] == truth["EF"] and s["fps"] == tv["FrameRate"]
            assert s["image_quality"] == tv["ImageQuality"] and s["spacing"] == (0.3, 0.15)
            assert s["num_frames"] == FRAMES and s["annotated_frames"] == list(range(FRAMES)) and s["labeled"]
            assert s["info"]["Sex"] == truth["Sex"] and s["info"]["Age"] == truth["Age"]
            assert s["image_path"].endswith(f"{s['video_id'].replace('/', '_')}_half_sequence.nii.gz")
    phases = [(s["video_id"], s["phase"], s["frame_idx"]) for s in DatasetCatalog.get("camus_test")]
    assert phases == [("patient0003/2CH", "ED", 0), ("patient0003/2CH", "ES", FRAMES - 1),
                      ("patient0003/4CH", "ED", FRAMES - 1), ("patient0003/4CH", "ES", 0)]  # 4CH runs ES -> ED
    assert {s["phase"] for s in train} == {"ED", "ES", None}


def test_building_a_list_decodes_no_pixels(fixture, tmp_path, monkeypatch):
    monkeypatch.setenv("MEDVIDSEG_CACHE", str(tmp_path / "cache"))
    DatasetRoots.set("camus", str(fixture["base"]))
    DatasetCatalog.clear_cache()
    samples = DatasetCatalog.get("camus_train")
    assert all(s["cache"]._record is None for s in samples) and not (tmp_path / "cache").exists()
    assert samples[0]["cache"].image().shape == (FRAMES, *fixture["size"])  # decoded on first use


# ------------------------------------------------------------------------------------------------ mapped samples

def raw_labels(meta) -> np.ndarray:
    return np.asarray(nib.load(meta["label_path"]).dataobj).transpose(2, 1, 0)  # (W, H, T) -> (T, H, W)


def test_eval_mapper_scores_the_ed_or_es_frame_against_the_native_label(camus):
    mapper = build(MAPPERS, {"name": "ClipEvalMapper", "clip_len": 5, "size": [32, 24]}, num_classes=3)
    for meta in DatasetCatalog.get("camus_test"):
        s = mapper(meta)
        assert s["video"].shape == (5, 3, 32, 24) and s["masks"].shape == (5, 3, 32, 24)
        assert s["scored"].nonzero().flatten().tolist() == [2] and s["frame_idx"][2] == meta["frame_idx"]
        assert s["has_ann"].all()  # every half-sequence frame is labelled
        gt = raw_labels(meta)[meta["frame_idx"]]
        assert torch.equal(s["gt_full"][0], torch.from_numpy(gt.astype(np.int64)))
        assert set(s["gt_full"].unique().tolist()) == {0, 1, 2, 3}
        assert s["masks"][2].any(dim=(1, 2)).all()  # LV endo, LV myo and LA on the scored frame


def test_train_mapper_supervises_every_clip_frame(camus):
    meta = DatasetCatalog.get("camus_train")[3]
    s = build(MAPPERS, {"name": "ClipTrainMapper", "clip_len": 3, "size": [32, 24]}, num_classes=3)(meta, seed=1)
    assert s["masks"].shape == (3, 3, 32, 24) and s["has_ann"].all() and not s["scored"].any()
    assert s["masks"].any(dim=(2, 3)).all()  # each class present on each frame


def test_edes_names_take_labels_from_the_single_frame_files(tmp_path):
    info = broken(tmp_path)
    ed_gt = tmp_path / "CAMUS" / "database_nifti" / "patient0003" / "patient0003_2CH_ED_gt.nii.gz"
    img = nib.load(str(ed_gt))
    lab = np.asarray(img.dataobj).copy()
    lab[lab == 3] = 0  # no LA in the single-frame ED label
    nib.save(nib.Nifti1Image(lab, img.affine, img.header), str(ed_gt))
    mapper = build(MAPPERS, {"name": "ClipEvalMapper", "clip_len": 3, "size": [16, 16]}, num_classes=3)
    seq, single = DatasetCatalog.get("camus_2ch_test"), DatasetCatalog.get("camus_2ch_edes_test")
    assert [(s["phase"], s["frame_idx"]) for s in single] == [(s["phase"], s["frame_idx"]) for s in seq]
    assert single[0]["annotated_frames"] == [0, FRAMES - 1]
    assert 3 in mapper(seq[0])["gt_full"] and 3 not in mapper(single[0])["gt_full"]
    s = mapper(single[1])  # ES (the last frame): only clip frames showing ED or ES carry a label
    assert s["frame_idx"].tolist() == [FRAMES - 2, FRAMES - 1, FRAMES - 1]  # clamped at the video's end
    assert s["has_ann"].tolist() == [False, True, True] and s["gt_full"].shape == (1, *info["size"])


# ------------------------------------------------------------------------------------------------ bad inputs

def test_label_with_another_shape_than_its_image_names_both_files(tmp_path):
    info = broken(tmp_path, bad_label_shape=3)
    msg = one_line_error("camus_test")
    assert str(info["bad_label_file"]) in msg and "patient0003_2CH_half_sequence.nii.gz" in msg


def test_split_file_naming_a_missing_patient_names_both(tmp_path):
    broken(tmp_path, missing_split_patient=9)
    msg = one_line_error("camus_2ch_train")
    assert str(tmp_path / "CAMUS" / "database_split" / "subgroup_training.txt") in msg and "patient0009" in msg


def test_training_honours_the_bad_data_policy(tmp_path):
    info = broken(tmp_path, bad_label_shape=1, missing_split_patient=9)
    assert str(info["bad_label_file"]) in one_line_error("camus_train")
    BadData.set_policy("skip")
    samples = DatasetCatalog.get("camus_train")
    assert {s["video_id"] for s in samples} == {"patient0001/4CH"}  # 2CH label is bad, patient0009 missing
    skipped = dict(BadData.skipped)
    assert len(skipped) == 2 and any(str(info["bad_label_file"]) in r for r in skipped.values())
    assert any(p.endswith("patient0009") for p in skipped)


def test_missing_root_says_what_to_set(tmp_path, monkeypatch):
    DatasetRoots.set("camus", str(tmp_path / "elsewhere"))
    msg = one_line_error("camus_train")
    assert str(tmp_path / "elsewhere" / "CAMUS") in msg and "data.roots.camus" in msg
    monkeypatch.delenv("DATASET_PATH", raising=False)
    DatasetRoots.set("camus", None)
    msg = one_line_error("camus_test")
    assert "DATASET_PATH" in msg and "data.roots.camus" in msg


def test_missing_split_file_is_named(tmp_path):
    broken(tmp_path)
    (tmp_path / "CAMUS" / "database_split" / "subgroup_validation.txt").unlink()
    assert "subgroup_validation.txt" in one_line_error("camus_val")


@pytest.mark.parametrize("edit, expected", [
    (lambda t: t.replace("EF: ", "Ejection: "), "missing key EF"),
    (lambda t: "\n".join(line for line in t.splitlines() if not line.startswith("FrameRate")), "FrameRate"),
    (lambda t: t.replace("ED: 1", "ED: one"), "ED = 'one'"),
    (lambda t: t.replace("ED: 1", "ED: 9"), "1..NbFrame=6"),
    (lambda t: t.replace("ES: 6", "ES: 1"), "other than ED"),
    (lambda t: t.replace("NbFrame: 6", "NbFrame: 5").replace("ES: 6", "ES: 5"), "says NbFrame = 5"),
    (lambda t: re.sub("ImageQuality: .*", "ImageQuality: Excellent", t), "ImageQuality = 'Excellent'"),
    (lambda t: t + "no colon here\n", "is not 'key: value'"),
])
def test_bad_info_cfg_is_a_one_line_error_naming_the_file(tmp_path, edit, expected):
    broken(tmp_path)
    cfg = tmp_path / "CAMUS" / "database_nifti" / "patient0002" / "Info_2CH.cfg"  # ED 1, ES 6
    cfg.write_text(edit(cfg.read_text()))
    msg = one_line_error("camus_val")
    assert str(cfg) in msg and expected in msg


# ------------------------------------------------------------------------------------------------ check_data

def test_check_data_counts_no_problem_on_the_fixture_and_each_fault_on_a_broken_one(camus, tmp_path):
    cfg = load_config(UNET, [f"data.roots.camus={camus['base']}"])
    text, problems = check_config_datasets(cfg)
    assert problems == 0 and "training/2CH" in text and "testing/4CH" in text
    info = write_camus(tmp_path / "CAMUS", patients=(1, 2, 3), frames=FRAMES, bad_label_shape=2,
                       missing_split_patient=7)
    os.remove(tmp_path / "CAMUS" / "database_nifti" / "patient0003" / "patient0003_4CH_ES_gt.nii.gz")
    report = reg.scan_camus(tmp_path / "CAMUS")
    files = [p["file"] for p in report["problems"]]
    assert report["totals"]["problems"] == 3 == len(files)
    assert str(info["bad_label_file"]).replace("_gt", "") in files  # the video with the bad label
    assert any(f.endswith("subgroup_training.txt") for f in files)
    assert report["sites"]["testing/4CH"]["problems"] == 1 and report["totals"]["videos"] == 6
    shutil.rmtree(tmp_path / "CAMUS" / "database_nifti" / "patient0002")
    cfg = load_config(UNET, [f"data.roots.camus={tmp_path}"])
    assert check_config_datasets(cfg)[1] == 3  # the fault in patient0002 became a missing patient


def test_check_data_cli_takes_the_base_or_the_camus_folder_and_gates_on_problems(camus, tmp_path, capsys):
    from tools.check_data import main as check_data

    assert check_data(["--family", "camus", "--root", str(camus["base"])]) == 0
    assert "0 problems" in capsys.readouterr().out
    assert check_data(["--family", "camus", "--root", str(camus["base"] / "CAMUS"), "--json",
                       str(tmp_path / "r.json")]) == 0
    assert json.loads((tmp_path / "r.json").read_text())["totals"]["videos"] == 6
    write_camus(tmp_path / "bad" / "CAMUS", patients=(1, 2, 3), frames=FRAMES, bad_label_shape=2)
    assert check_data(["--family", "camus", "--root", str(tmp_path / "bad")]) == 1
    capsys.readouterr()
    assert check_data(["--family", "camsu", "--root", str(tmp_path)]) == 2
    assert "did you mean 'camus'" in capsys.readouterr().err
    assert check_data(["--family", "camus", "--root", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert "nowhere" in err and len(err.strip().splitlines()) == 1
    DatasetRoots.set("camus", str(camus["base"]))


# ------------------------------------------------------------------------------------------------ end to end

def test_train_then_eval_from_the_checkpoint(camus, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["--config_file", UNET, "--trainer_mode", "train_attmpt", "--output_dir",
            str(out), *TINY_OVERRIDES, "train.max_iter=2", "train.eval_period=0", "data.num_workers=0",
            "data.train_mapper.size=[32,32]", "data.eval_mapper.size=[32,32]", f"data.roots.camus={camus['base']}"]
    assert cli.main(args) == 0
    m = json.loads((out / "eval" / "camus_test" / "metrics.json").read_text())
    assert m["class_names"] == ["LV_endo", "LV_myo", "LA"] and m["num_samples"] == 4 and m["num_videos"] == 2
    DatasetRoots.set("camus", None)  # the checkpoint's config must bring the root back
    eval_out = tmp_path / "eval"
    assert cli.main(["--trainer_mode", "eval", "--eval_path", str(out / "checkpoints" / "model_final.pth"),
                     "--output_dir", str(eval_out)]) == 0
    m2 = json.loads((eval_out / "eval" / "camus_test" / "metrics.json").read_text())
    assert m2["mDice"] == pytest.approx(m["mDice"], abs=1e-9) and m2["num_samples"] == 4
    assert "| camus_val |" in capsys.readouterr().out


def test_samurai_config_trains_and_scores_every_frame_but_the_ed_prompt(camus, tmp_path):
    out = tmp_path / "samurai"
    config = str(REPO / "configs" / "camus" / "samurai_tiny.py")
    assert cli.main(["--config_file", config, "--output_dir", str(out), "train.max_iter=2", "train.eval_period=0",
                     "train.checkpoint_period=2", "train.batch_size=2", "optim.scheduler.warmup_iters=1",
                     "data.num_workers=0", "data.train_mapper.size=[32,32]", "data.train_mapper.clip_len=3",
                     "model.sam2.image_size=64", "log.wandb.enabled=false", "log.tensorboard=false",
                     f"data.roots.camus={camus['base']}"]) == 0
    m = json.loads((out / "eval" / "camus_4ch_test_video" / "metrics.json").read_text())
    # the test patient's 4CH half sequence: every one of its FRAMES frames labelled, ED carries the prompt
    assert m["num_videos"] == 1 and m["num_scored_frames"] == FRAMES - 1
    assert m["class_names"] == ["LV_endo", "LV_myo", "LA"] and 0 <= m["mDice"] <= 1 and 0 <= m["mLost"] <= 1


def test_video_eval_mapper_can_score_every_annotated_frame(camus):
    from core.catalog import DatasetCatalog
    from core.registry import MAPPERS, build
    from trainers.evaluation import per_video_metas

    meta = per_video_metas(DatasetCatalog.get("camus_4ch_test"))[0]
    samples = build(MAPPERS, dict(name="VideoEvalMapper", size=[32, 32], num_classes=3, transforms=[]))(meta)
    every = build(MAPPERS, dict(name="VideoEvalMapper", size=[32, 32], num_classes=3, transforms=[],
                                score="annotated"))(meta)
    assert int(samples["scored"].sum()) == 2  # ED and ES
    assert int(every["scored"].sum()) == FRAMES and every["gt_full"].shape[0] == FRAMES
    with pytest.raises(Exception, match="score must be"):
        build(MAPPERS, dict(name="VideoEvalMapper", score="all"))
