"""The EchoNet-Dynamic register on the raw-layout fixture: names and split sizes from FileList, one sample per traced
frame with the video's ES / ED / EF facts, masks rasterised from the tracings, mapped clips, skipped short traces,
a DataError naming the file for each bad input, the data check, and one train + eval run through main."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from core.catalog import DatasetCatalog, DatasetRoots, MetadataCatalog
from core.registry import MAPPERS, build
from data_schedule.registers import echonet_dynamic as reg
from data_schedule.sources.nifti import DataError
from data_schedule.synthetic.raw_fixtures import write_echonet

NAMES = ["echonet_dynamic_train", "echonet_dynamic_val", "echonet_dynamic_test"]
FIXTURE = dict(videos=5, frames=16, size=32)  # splits TRAIN, TRAIN, TRAIN, VAL, TEST


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDVIDSEG_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def echonet(tmp_path_factory):
    """A clean fixture under <base>/EchoNet-Dynamic (never modified)."""
    base = tmp_path_factory.mktemp("echonet")
    return base, write_echonet(base / reg.FOLDER, **FIXTURE)


def use(base) -> None:
    DatasetRoots.set(reg.FAMILY, str(base))


def broken(tmp_path, **bad):
    info = write_echonet(tmp_path / reg.FOLDER, **{**FIXTURE, **bad})
    use(tmp_path)
    return info


def reg_config(name: str):
    return Path(__file__).resolve().parents[2] / "configs" / "echonet_dynamic" / f"{name}.py"


def one_line_error(excinfo) -> str:
    msg = str(excinfo.value)
    assert "\n" not in msg
    return msg


def test_names_split_sizes_and_metadata(echonet):
    base, info = echonet
    use(base)
    by_split = {s: [n for n, v in info["videos"].items() if v["Split"] == s] for s in ("TRAIN", "VAL", "TEST")}
    for name, split in zip(NAMES, ("TRAIN", "VAL", "TEST")):
        samples = DatasetCatalog.get(name)
        assert [s["video_id"] for s in samples[::2]] == by_split[split]  # FileList order, 2 samples per video
        assert len(samples) == 2 * len(by_split[split])
        assert [s["sample_id"] for s in samples] == list(range(len(samples)))
        m = MetadataCatalog.get(name)
        assert (m.classes, m.family, m.part, m.skipped_videos) == (["LV"], "echonet_dynamic", name.split("_")[-1], 0)
        assert m.mode == ("train" if split == "TRAIN" else "evaluate")
    assert DatasetRoots.get(reg.FAMILY) == base / reg.FOLDER


def test_split_column_is_case_insensitive(tmp_path):
    info = broken(tmp_path)
    path = tmp_path / reg.FOLDER / "FileList.csv"
    lines = path.read_text().splitlines()
    path.write_text("\n".join([lines[0]] + [ln.rsplit(",", 1)[0] + "," + ln.rsplit(",", 1)[1].lower()
                                            for ln in lines[1:]]) + "\n")
    assert [len(DatasetCatalog.get(n)) for n in NAMES] == [6, 2, 2]
    assert {s["split"] for s in DatasetCatalog.get(NAMES[0])} == {"TRAIN"} and len(info["videos"]) == 5


def test_a_video_whose_tracing_rows_are_not_consecutive_keeps_es_first(tmp_path):
    info = broken(tmp_path)
    path = tmp_path / reg.FOLDER / "VolumeTracings.csv"
    head, *rows = path.read_text().splitlines()
    first = next(iter(info["videos"]))
    mine = [r for r in rows if r.startswith(first)]  # 21 ES rows, then 21 ED rows
    others = [r for r in rows if not r.startswith(first)]
    path.write_text("\n".join([head, *mine[:21], *others, *mine[21:]]) + "\n")
    es, ed = DatasetCatalog.get(NAMES[0])[:2]
    assert (es["video_id"], es["phase"], es["frame_idx"], ed["frame_idx"]) == (first, "ES", info["videos"][first]["ES"],
                                                                               info["videos"][first]["ED"])


def test_registering_decodes_no_video(echonet, monkeypatch):
    base, _ = echonet
    use(base)
    DatasetCatalog.clear_cache()

    def no_decoding(path):
        raise AssertionError(f"decoded {path} while building the list")

    monkeypatch.setattr(reg, "read_avi", no_decoding)
    samples = DatasetCatalog.get(NAMES[0])
    assert samples and all(s["cache"]._record is None for s in samples)


def test_a_10000_video_index_builds_in_under_2_s(tmp_path):
    import time

    from data_schedule.synthetic.raw_fixtures import write_echonet_filelist_only

    folder = tmp_path / reg.FOLDER
    info = write_echonet_filelist_only(folder / "FileList.csv", rows=10000, tracings=folder / "VolumeTracings.csv")
    assert info["tracing_rows"] == 10000 * 2 * 21
    use(tmp_path)
    t0 = time.perf_counter()
    train = DatasetCatalog.get(NAMES[0])
    elapsed = time.perf_counter() - t0
    assert len(train) == 2 * info["splits"]["TRAIN"] and elapsed < 2.0, elapsed
    assert [len(DatasetCatalog.get(n)) for n in NAMES[1:]] == [2000, 2000]


def test_meta_has_phase_and_the_video_facts(echonet):
    base, info = echonet
    use(base)
    for name in NAMES:
        samples = DatasetCatalog.get(name)
        for es_sample, ed_sample in zip(samples[::2], samples[1::2]):
            v = info["videos"][es_sample["video_id"]]
            assert (es_sample["phase"], es_sample["frame_idx"]) == ("ES", v["ES"])
            assert (ed_sample["phase"], ed_sample["frame_idx"], ed_sample["video_id"]) == ("ED", v["ED"],
                                                                                           es_sample["video_id"])
            for s in (es_sample, ed_sample):
                assert (s["es"], s["ed"], s["num_frames"], s["fps"]) == (v["ES"], v["ED"], FIXTURE["frames"], 50.0)
                assert (s["ef"], s["edv"], s["esv"]) == pytest.approx((v["EF"], v["EDV"], v["ESV"]), abs=1e-3)
                assert s["annotated_frames"] == sorted([v["ES"], v["ED"]]) and s["labeled"]
                assert s["video_path"] == str(base / reg.FOLDER / "Videos" / f"{s['video_id']}.avi")
            assert es_sample["cache"] is ed_sample["cache"]  # one video, decoded once for both samples


def test_trace_mask_fills_the_outline_x1_then_reversed_x2():
    # long axis, then chords at y = 1, 2, 3 from x 3..5, 2..6, 1..7 (fractions round to the grid): a trapezoid
    # with 45° sides, so the pixels cv2 fills are exactly the ones listed by hand. X2 not reversed would leave a
    # hole in row 3 (a bow tie); the long axis row as a vertex would add (0, 4) and (4, 4).
    trace = np.array([[4.0, 0.0, 4.0, 4.0], [3.2, 1.0, 4.8, 1.0], [2.0, 2.0, 6.0, 2.0], [1.0, 2.6, 7.4, 3.0]])
    expected = np.zeros((5, 9), np.uint8)
    expected[1, 3:6] = 1
    expected[2, 2:7] = 1
    expected[3, 1:8] = 1
    np.testing.assert_array_equal(reg.trace_mask(trace, (5, 9)), expected)
    # a box (vertical sides): rows 1..3, columns 2..5, outline included
    box = np.array([[0, 0, 0, 0], [2, 1, 5, 1], [2, 2, 5, 2], [2, 3, 5, 3]], float)
    expected = np.zeros((5, 9), np.uint8)
    expected[1:4, 2:6] = 1
    np.testing.assert_array_equal(reg.trace_mask(box, (5, 9)), expected)


def test_source_gives_grey_frames_and_lv_masks_at_es_and_ed(echonet):
    base, info = echonet
    use(base)
    cache = DatasetCatalog.get(NAMES[0])[0]["cache"]
    v = info["videos"][DatasetCatalog.get(NAMES[0])[0]["video_id"]]
    image, labels = cache.image(), cache.labels()
    assert image.shape == (16, 32, 32) and image.dtype == np.uint8
    np.testing.assert_array_equal(image, v["frames"])  # FFV1 is lossless; RGB2GRAY of equal channels is exact
    assert sorted(labels) == sorted([v["ES"], v["ED"]])
    assert all(set(np.unique(m)) == {0, 1} for m in labels.values())
    assert labels[v["ES"]].sum() < 0.8 * labels[v["ED"]].sum()
    cavity = v["frames"][v["ED"]] < 50  # the dark LV the tracing outlines (the sector's outside is 0 too: crop it)
    lv = labels[v["ED"]].astype(bool)
    assert (cavity & lv).sum() / lv.sum() > 0.85


def test_mapped_clips_score_the_traced_frame(echonet):
    base, _ = echonet
    use(base)
    meta = DatasetCatalog.get(NAMES[2])[1]  # the test video's ED sample
    ev = build(MAPPERS, dict(name="ClipEvalMapper", clip_len=5, size=[48, 48]), num_classes=1)(meta)
    assert ev["video"].shape == (5, 3, 48, 48) and ev["masks"].shape == (5, 1, 48, 48)
    t = int(ev["scored"].nonzero()[0][0])
    assert ev["scored"].sum() == 1 and int(ev["frame_idx"][t]) == meta["frame_idx"] == meta["ed"]
    assert ev["has_ann"][t] and ev["masks"][t].any()
    assert ev["gt_full"].shape == (1, 32, 32) and set(ev["gt_full"].unique().tolist()) == {0, 1}
    np.testing.assert_array_equal(ev["gt_full"][0].numpy(), meta["cache"].labels()[meta["ed"]])
    for f, ann, m in zip(ev["frame_idx"].tolist(), ev["has_ann"].tolist(), ev["masks"]):
        assert ann == (f in (meta["es"], meta["ed"])) and (m.any().item() or not ann)
    tr = build(MAPPERS, dict(name="ClipTrainMapper", clip_len=3, size=[48, 48]), num_classes=1)(meta, seed=1)
    assert tr["masks"].shape == (3, 1, 48, 48) and not tr["scored"].any() and tr["has_ann"].any()


def test_videos_with_one_traced_frame_are_skipped_and_counted(tmp_path, caplog):
    info = broken(tmp_path, short_trace=0)
    with caplog.at_level(logging.WARNING, logger=reg.__name__):
        samples = DatasetCatalog.get(NAMES[0])
    assert info["short_trace"] not in {s["video_id"] for s in samples} and len(samples) == 4
    assert MetadataCatalog.get(NAMES[0]).skipped_videos == 1
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "1 video(s)" in warnings[0]


def test_traced_frame_past_the_end_is_skipped_in_training_only_under_skip(tmp_path):
    from core.catalog import BadData

    info = broken(tmp_path)
    path = tmp_path / reg.FOLDER / "FileList.csv"
    names = list(info["videos"])
    bad = {names[0], names[3]}  # a TRAIN and the VAL video: NumberOfFrames 2, so a traced frame lies past the end
    lines = path.read_text().splitlines()
    cut = [ln.split(",") for ln in lines[1:]]
    for row in cut:
        if row[0] in bad:
            row[7] = "2"
    path.write_text("\n".join([lines[0]] + [",".join(r) for r in cut]) + "\n")
    with pytest.raises(DataError) as e:
        DatasetCatalog.get(NAMES[0])
    assert names[0] in one_line_error(e) and "VolumeTracings.csv" in str(e.value)
    BadData.set_policy("skip")
    train = DatasetCatalog.get(NAMES[0])
    assert names[0] not in {s["video_id"] for s in train} and len(train) == 4
    assert [f for f, _ in BadData.skipped] == [str(tmp_path / reg.FOLDER / "VolumeTracings.csv")]
    with pytest.raises(DataError, match=names[3]):  # evaluation lists never skip
        DatasetCatalog.get(NAMES[1])


def test_missing_root_names_what_to_set(tmp_path, monkeypatch):
    monkeypatch.delenv("DATASET_PATH", raising=False)
    DatasetRoots.set(reg.FAMILY, None)
    with pytest.raises(DataError) as e:
        DatasetCatalog.get(NAMES[0])
    assert "DATASET_PATH" in one_line_error(e) and "data.roots.echonet_dynamic" in str(e.value)
    use(tmp_path)  # exists, but holds no EchoNet-Dynamic folder
    with pytest.raises(DataError) as e:
        DatasetCatalog.get(NAMES[0])
    assert str(tmp_path / reg.FOLDER) in one_line_error(e)


@pytest.mark.parametrize("column", ["Split", "NumberOfFrames"])
def test_missing_filelist_column_names_the_column_and_file(tmp_path, column):
    broken(tmp_path, drop_column=column)
    with pytest.raises(DataError) as e:
        DatasetCatalog.get(NAMES[1])
    msg = one_line_error(e)
    assert repr(column) in msg and str(tmp_path / reg.FOLDER / "FileList.csv") in msg


def test_tracings_of_an_unknown_video_name_it(tmp_path):
    info = broken(tmp_path, orphan_trace=True)
    with pytest.raises(DataError) as e:
        DatasetCatalog.get(NAMES[2])
    msg = one_line_error(e)
    assert info["orphan"] in msg and "VolumeTracings.csv" in msg and "FileList.csv" in msg


def test_undecodable_avi_fails_on_first_read_naming_it(tmp_path):
    info = broken(tmp_path, broken_video=0)
    samples = DatasetCatalog.get(NAMES[0])  # the list does not decode: it builds
    bad = [s for s in samples if s["video_id"] == info["broken_video"]]
    assert len(bad) == 2
    mapper = build(MAPPERS, dict(name="ClipEvalMapper", clip_len=3, size=[32, 32]), num_classes=1)
    with pytest.raises(DataError) as e:
        mapper(bad[0])
    assert f"{info['broken_video']}.avi" in one_line_error(e)
    mapper(samples[2])  # the other videos read


def test_check_data_counts_every_split_and_reports_broken_files(echonet, tmp_path):
    from core.config import load_config
    from data_schedule.check_data import check_config_datasets, format_report

    base, info = echonet
    report = reg.check(base / reg.FOLDER)
    t = report["totals"]
    assert (t["problems"], t["videos"], t["labelled_videos"], t["annotated_frames"]) == (0, 5, 5, 10)
    assert {g: s["videos"] for g, s in report["sites"].items()} == {"TRAIN": 3, "VAL": 1, "TEST": 1}
    assert t["label_values"] == [0, 1] and t["frames_range"] == [16, 16] and t["height_range"] == [32, 32]
    assert "No problems found." in format_report(report)
    json.dumps(report)

    cfg = load_config(reg_config("unet_tiny"), [f"data.roots.echonet_dynamic={base}"])
    text, n = check_config_datasets(cfg)
    assert n == 0 and "echonet_dynamic (echonet_dynamic_train, echonet_dynamic_val, echonet_dynamic_test)" in text

    bad = broken(tmp_path, broken_video=3, orphan_trace=True, short_trace=1)
    report = reg.check(tmp_path / reg.FOLDER)
    files = sorted(p["file"] for p in report["problems"])
    assert report["totals"]["problems"] == 2 and report["totals"]["unlabelled_videos"] == 1
    assert files == sorted([str(tmp_path / reg.FOLDER / "Videos" / f"{bad['broken_video']}.avi"),
                            str(tmp_path / reg.FOLDER / "VolumeTracings.csv")])
    assert report["sites"]["VAL"]["problems"] == 1  # video 3 is the VAL one


def test_unet_trains_and_evaluates_on_echonet(echonet, tmp_path):
    import main as cli

    base, _ = echonet
    out = tmp_path / "run"
    args = ["--config_file", str(reg_config("unet_tiny")), "--output_dir", str(out),
            f"data.roots.echonet_dynamic={base}", "train.max_iter=2", "train.eval_period=0", "train.checkpoint_period=2", "train.batch_size=2",
            "optim.scheduler.warmup_iters=1", "data.num_workers=0", "data.eval_batch_size=2",
            "data.train_mapper.size=[32,32]", "data.eval_mapper.size=[32,32]", "data.train_mapper.clip_len=3",
            "data.eval_mapper.clip_len=3", "log.wandb.enabled=false", "log.tensorboard=false",
            "data.evaluator.num_vis=1", "model.decoder_channels=[16,16,8,8,8]"]
    assert cli.main([*args, "--trainer_mode", "train_attmpt"]) == 0
    ckpt = out / "checkpoints" / "model_final.pth"
    assert ckpt.is_file()
    eval_out = tmp_path / "eval"
    assert cli.main(["--trainer_mode", "eval", "--eval_path", str(ckpt), "--output_dir", str(eval_out)]) == 0
    for name in NAMES[1:]:
        m = json.loads((eval_out / "eval" / name / "metrics.json").read_text())
        assert m["num_samples"] == 2 and 0.0 <= m["Dice_LV"] <= 1.0 and "Dice_LA" not in m


def test_samurai_trains_and_scores_es_from_the_ed_prompt(echonet, tmp_path):
    import main as cli

    base, _ = echonet
    out = tmp_path / "samurai"
    assert cli.main(["--config_file", str(reg_config("samurai_tiny")), "--output_dir", str(out),
                     f"data.roots.echonet_dynamic={base}", "train.max_iter=2", "train.eval_period=0",
                     "train.checkpoint_period=2", "train.batch_size=2", "optim.scheduler.warmup_iters=1",
                     "data.num_workers=0", "data.train_mapper.size=[32,32]", "data.train_mapper.clip_len=3",
                     "model.sam2.image_size=64", "log.wandb.enabled=false", "log.tensorboard=false"]) == 0
    for name in ("echonet_dynamic_val_video", "echonet_dynamic_test_video"):
        m = json.loads((out / "eval" / name / "metrics.json").read_text())
        assert m["num_videos"] == 1 and m["num_scored_frames"] == 1  # ED prompted, ES scored
        assert 0.0 <= m["Dice_LV"] <= 1.0
