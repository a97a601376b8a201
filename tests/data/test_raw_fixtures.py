"""The raw-layout fixture writers produce the real CAMUS / EchoNet-Dynamic / SUN-SEG trees (names, formats, label
values, axis order), and our readers read them back consistently."""
from __future__ import annotations

import csv
import time

import nibabel as nib
import numpy as np
import pytest
from matplotlib.path import Path as PolyPath
from scipy import ndimage

from data_schedule.sources.avi import read_avi
from data_schedule.sources.base import DataError
from data_schedule.sources.frames import list_frames, read_frame_folder
from data_schedule.sources.volume import read_nifti
from data_schedule.synthetic.raw_fixtures import (ECHONET_FILELIST_COLUMNS, ECHONET_TRACING_COLUMNS,
                                                  SUNSEG_TEST_SETS, write_camus, write_echonet,
                                                  write_echonet_filelist_only, write_sunseg)


def read_cfg(path) -> dict[str, str]:
    return dict(line.split(": ", 1) for line in path.read_text().splitlines())


def read_csv(path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# ------------------------------------------------------------------------------------------------ CAMUS

@pytest.fixture(scope="module")
def camus(tmp_path_factory):
    return write_camus(tmp_path_factory.mktemp("camus"), patients=(1, 2, 3), frames=6, size=(40, 32))


def test_camus_file_names_are_the_release_layout(camus):
    root = camus["root"]
    for pid in (1, 2, 3):
        name = f"patient{pid:04d}"
        expected = {f"Info_{v}.cfg" for v in ("2CH", "4CH")}
        expected |= {f"{name}_{v}_{kind}{gt}.nii.gz" for v in ("2CH", "4CH")
                     for kind in ("ED", "ES", "half_sequence") for gt in ("", "_gt")}
        assert {p.name for p in (root / "database_nifti" / name).iterdir()} == expected
    assert {p.name for p in (root / "database_split").iterdir()} == {
        "subgroup_training.txt", "subgroup_validation.txt", "subgroup_testing.txt"}
    assert (root / "database_split" / "subgroup_training.txt").read_text() == "patient0001\n"
    assert camus["split"] == {"training": ["patient0001"], "validation": ["patient0002"],
                              "testing": ["patient0003"]}


def test_camus_axes_dtype_spacing_and_single_frame_files(camus):
    pdir = camus["root"] / "database_nifti" / "patient0002"
    seq = nib.load(str(pdir / "patient0002_2CH_half_sequence.nii.gz"))
    ed = nib.load(str(pdir / "patient0002_2CH_ED_gt.nii.gz"))
    assert seq.shape == (32, 40, 6) and ed.shape == (32, 40)  # nibabel (W, H, T) and a 2-D (W, H) frame
    assert seq.get_data_dtype() == np.uint8 and ed.get_data_dtype() == np.uint8
    r = read_nifti(pdir / "patient0002_2CH_half_sequence.nii.gz", pdir / "patient0002_2CH_half_sequence_gt.nii.gz")
    assert r.frames.shape == (6, 40, 32) and r.frames.dtype == np.uint8
    assert r.spacing == (0.3, 0.15)
    one = read_nifti(pdir / "patient0002_2CH_ED.nii.gz", pdir / "patient0002_2CH_ED_gt.nii.gz")
    assert one.frames.shape == (1, 40, 32) and one.annotated_frames == [0]
    np.testing.assert_array_equal(one.frames[0], r.frames[0])  # ED is frame 1 of this clip
    np.testing.assert_array_equal(one.labels[0], r.labels[0])


def test_camus_every_half_sequence_frame_labelled_with_the_four_values(camus):
    pdir = camus["root"] / "database_nifti" / "patient0001"
    r = read_nifti(pdir / "patient0001_4CH_half_sequence.nii.gz", pdir / "patient0001_4CH_half_sequence_gt.nii.gz")
    assert r.annotated_frames == list(range(6))
    for t in r.annotated_frames:
        assert set(np.unique(r.labels[t]).tolist()) == {0, 1, 2, 3}
    r.validate(num_classes=3)
    # the LV cavity (1) is dark and the myocardium (2) bright in the image, as in B-mode
    f, lab = r.frames[0], r.labels[0]
    assert f[lab == 1].mean() + 80 < f[lab == 2].mean()


@pytest.mark.parametrize("pid,view", [(1, "2CH"), (2, "4CH"), (3, "4CH")])
def test_camus_info_ed_es_match_lv_areas(camus, pid, view):
    name = f"patient{pid:04d}"
    pdir = camus["root"] / "database_nifti" / name
    cfg = read_cfg(pdir / f"Info_{view}.cfg")
    assert list(cfg) == ["ED", "ES", "NbFrame", "Sex", "Age", "ImageQuality", "EF", "FrameRate"]
    assert cfg["NbFrame"] == "6" and cfg["ImageQuality"] in ("Good", "Medium", "Poor")
    ed, es = int(cfg["ED"]), int(cfg["ES"])
    assert {ed, es} == {1, 6}  # one of them is NbFrame
    r = read_nifti(pdir / f"{name}_{view}_half_sequence.nii.gz", pdir / f"{name}_{view}_half_sequence_gt.nii.gz")
    area = [int((r.labels[t] == 1).sum()) for t in range(r.num_frames)]
    assert area == camus["patients"][name]["views"][view]["lv_area"]
    assert area[ed - 1] == max(area) and area[es - 1] == min(area) and area[ed - 1] > 1.3 * area[es - 1]
    ef = float(cfg["EF"])
    assert 35 < ef < 70 and ef == camus["patients"][name]["EF"]
    assert ed == (6 if (pid, view) == (3, "4CH") else 1)  # only the last patient's last view runs ES -> ED


def test_camus_bad_inputs(tmp_path):
    info = write_camus(tmp_path, patients=(1, 2), bad_label_shape=2, missing_split_patient=7)
    bad = info["bad_label_file"]
    assert bad.name == "patient0002_2CH_half_sequence_gt.nii.gz"
    with pytest.raises(DataError) as e:
        read_nifti(bad.with_name("patient0002_2CH_half_sequence.nii.gz"), bad)
    assert str(bad) in str(e.value) and "(6, 40, 30)" in str(e.value)
    listed = (tmp_path / "database_split" / "subgroup_training.txt").read_text().split()
    assert "patient0007" in listed and not (tmp_path / "database_nifti" / "patient0007").exists()


def test_camus_is_deterministic_and_fast(tmp_path):
    t0 = time.perf_counter()
    a = write_camus(tmp_path / "a", seed=5)
    assert time.perf_counter() - t0 < 1.0
    b = write_camus(tmp_path / "b", seed=5)
    c = write_camus(tmp_path / "c", seed=6)
    rel = "database_nifti/patient0001/patient0001_2CH_half_sequence.nii.gz"
    fa, fb, fc = (read_nifti(x["root"] / rel).frames for x in (a, b, c))
    np.testing.assert_array_equal(fa, fb)
    assert not np.array_equal(fa, fc)
    assert a["patients"] == b["patients"]


# ------------------------------------------------------------------------------------------------ EchoNet

@pytest.fixture(scope="module")
def echonet(tmp_path_factory):
    return write_echonet(tmp_path_factory.mktemp("echonet"), videos=5, frames=20, size=64)


def test_echonet_csv_columns_and_names(echonet):
    root = echonet["root"]
    with open(root / "FileList.csv") as f:
        assert f.readline().strip().split(",") == list(ECHONET_FILELIST_COLUMNS)
    with open(root / "VolumeTracings.csv") as f:
        assert f.readline().strip().split(",") == list(ECHONET_TRACING_COLUMNS)
    rows = read_csv(root / "FileList.csv")
    assert [r["FileName"] for r in rows] == list(echonet["videos"])
    assert all(len(r["FileName"]) == 18 and r["FileName"].startswith("0X") and "." not in r["FileName"]
               for r in rows)
    assert [r["Split"] for r in rows] == ["TRAIN", "TRAIN", "TRAIN", "VAL", "TEST"]
    assert {p.name for p in (root / "Videos").iterdir()} == {f"{r['FileName']}.avi" for r in rows}
    assert {t["FileName"] for t in read_csv(root / "VolumeTracings.csv")} == {f"{r['FileName']}.avi" for r in rows}


def test_echonet_videos_decode_as_the_file_list_says(echonet):
    root = echonet["root"]
    for row in read_csv(root / "FileList.csv"):
        r = read_avi(root / "Videos" / f"{row['FileName']}.avi")
        assert r.frames.shape == (int(row["NumberOfFrames"]), int(row["FrameHeight"]), int(row["FrameWidth"]), 3)
        assert r.fps == float(row["FPS"]) == 50.0
        assert (r.frames[..., 0] == r.frames[..., 2]).all()  # 3-channel grey
        np.testing.assert_array_equal(r.frames[..., 0], echonet["videos"][row["FileName"]]["frames"])  # FFV1


def traces_by_video(root) -> dict[str, dict[int, np.ndarray]]:
    """{FileName.avi: {frame: rows × (X1, Y1, X2, Y2)}} in file order."""
    out: dict[str, dict[int, list]] = {}
    for t in read_csv(root / "VolumeTracings.csv"):
        out.setdefault(t["FileName"], {}).setdefault(int(t["Frame"]), []).append(
            [float(t[k]) for k in ("X1", "Y1", "X2", "Y2")])
    return {n: {f: np.array(v) for f, v in d.items()} for n, d in out.items()}


def polygon(rows: np.ndarray) -> np.ndarray:
    """EchoNet's mask outline: x1[1:] then reversed x2[1:] (same for y); row 0 is the long axis."""
    return np.concatenate([rows[1:, :2], rows[1:, 2:][::-1]])


def shoelace(pts: np.ndarray) -> float:
    x, y = pts[:, 0], pts[:, 1]
    return 0.5 * abs(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1)))


def test_echonet_tracings_es_first_and_on_the_lv(echonet):
    root = echonet["root"]
    traces = traces_by_video(root)
    for name, meta in echonet["videos"].items():
        tr = traces[f"{name}.avi"]
        assert list(tr) == [meta["ES"], meta["ED"]]  # first traced frame = ES, last = ED
        assert all(len(rows) == 21 for rows in tr.values())
        es_area, ed_area = shoelace(polygon(tr[meta["ES"]])), shoelace(polygon(tr[meta["ED"]]))
        assert es_area < 0.75 * ed_area
        # the ED outline covers the dark cavity of the decoded ED frame
        frame = read_avi(root / "Videos" / f"{name}.avi").frames[meta["ED"], :, :, 0]
        yy, xx = np.mgrid[:frame.shape[0], :frame.shape[1]]
        inside = PolyPath(polygon(tr[meta["ED"]])).contains_points(np.c_[xx.ravel(), yy.ravel()]).reshape(frame.shape)
        dark, _ = ndimage.label(frame < 50)  # the cavity is the dark blob at the long axis' midpoint
        cy, cx = np.round(tr[meta["ED"]][0, [1, 3]].mean()).astype(int), np.round(tr[meta["ED"]][0, 0]).astype(int)
        cavity = dark == dark[cy, cx]
        dice = 2 * (inside & cavity).sum() / (inside.sum() + cavity.sum())
        assert dice > 0.97, dice


def test_echonet_volumes_follow_the_method_of_disks(echonet):
    traces = traces_by_video(echonet["root"])
    cm = 11.2 / 64
    for row in read_csv(echonet["root"] / "FileList.csv"):
        meta = echonet["videos"][row["FileName"]]
        vols = []
        for frame in (meta["ES"], meta["ED"]):
            rows = traces[f"{row['FileName']}.avi"][frame]
            length = np.hypot(*(rows[0, 2:] - rows[0, :2])) * cm
            d = np.hypot(rows[1:, 2] - rows[1:, 0], rows[1:, 3] - rows[1:, 1]) * cm
            vols.append(np.sum(np.pi * (d / 2) ** 2) * length / 20)
        esv, edv, ef = float(row["ESV"]), float(row["EDV"]), float(row["EF"])
        assert (esv, edv) == pytest.approx(vols, abs=1e-3)
        assert ef == pytest.approx(100 * (edv - esv) / edv, abs=1e-2) and 15 < ef < 75


def test_echonet_bad_inputs(tmp_path):
    info = write_echonet(tmp_path, videos=4, frames=8, size=32, short_trace=1, orphan_trace=True,
                         drop_column="Split", broken_video=2)
    traces = traces_by_video(tmp_path)
    assert len(traces[f"{info['short_trace']}.avi"]) == 1
    assert f"{info['orphan']}.avi" in traces and not (tmp_path / "Videos" / f"{info['orphan']}.avi").exists()
    assert info["orphan"] not in {r["FileName"] for r in read_csv(tmp_path / "FileList.csv")}
    assert "Split" not in read_csv(tmp_path / "FileList.csv")[0]
    broken = tmp_path / "Videos" / f"{info['broken_video']}.avi"
    with pytest.raises(DataError) as e:
        read_avi(broken)
    assert str(broken) in str(e.value)
    others = [n for n in info["videos"] if n != info["broken_video"]]
    assert all(read_avi(tmp_path / "Videos" / f"{n}.avi").num_frames == 8 for n in others)


def test_echonet_mjpg_codec_is_lossy_but_close(tmp_path):
    info = write_echonet(tmp_path, videos=1, frames=4, size=32, codec="MJPG")
    name, meta = next(iter(info["videos"].items()))
    r = read_avi(tmp_path / "Videos" / f"{name}.avi")
    assert np.abs(r.frames[..., 0].astype(int) - meta["frames"]).mean() < 6


def test_echonet_big_file_list(tmp_path):
    t0 = time.perf_counter()
    info = write_echonet_filelist_only(tmp_path / "FileList.csv", rows=10000)
    assert time.perf_counter() - t0 < 1.0
    rows = read_csv(info["path"])
    assert len(rows) == 10000 and list(rows[0]) == list(ECHONET_FILELIST_COLUMNS)
    assert len({r["FileName"] for r in rows}) == 10000
    assert info["splits"] == {"TRAIN": 8000, "VAL": 1000, "TEST": 1000}
    r = rows[123]
    assert float(r["ESV"]) == pytest.approx(float(r["EDV"]) * (1 - float(r["EF"]) / 100), abs=0.02)


# ------------------------------------------------------------------------------------------------ SUN-SEG

@pytest.fixture(scope="module")
def sunseg(tmp_path_factory):
    return write_sunseg(tmp_path_factory.mktemp("sunseg"), train_cases=2, test_cases=1, frames=6)


def test_sunseg_layout(sunseg):
    root = sunseg["root"]
    assert set(sunseg["cases"]) == {"TrainDataset/case1_1", "TrainDataset/case2_1", "TestEasyDataset/Seen/case1_2",
                                    "TestEasyDataset/Unseen/case3_3", "TestHardDataset/Seen/case1_4",
                                    "TestHardDataset/Unseen/case4_5"}
    for part in ["TrainDataset", *SUNSEG_TEST_SETS]:
        assert {p.name for p in (root / part).iterdir()} == {"Frame", "GT"}
    for key, case in sunseg["cases"].items():
        jpgs = sorted(p.name for p in case["frame_dir"].iterdir())
        pngs = sorted(p.name for p in case["gt_dir"].iterdir())
        assert all(n.endswith(".jpg") for n in jpgs) and [n[:-4] for n in jpgs] == [n[:-4] for n in pngs]
        assert all(n.startswith("case_M_") and "_ayy_image" in n for n in jpgs)


def test_sunseg_numeric_order_differs_from_lexical(sunseg):
    case = sunseg["cases"]["TrainDataset/case1_1"]
    lexical = sorted(p.name for p in case["frame_dir"].iterdir())
    natural = [p.name for p in list_frames(case["frame_dir"])]
    assert natural == case["frames"] != lexical
    assert "_a9_ayy_image0001" in natural[0] and "_a10_ayy_image0003" in natural[-1]
    assert "_a10_" in lexical[0]


def test_sunseg_read_back_frames_and_masks(sunseg):
    case = sunseg["cases"]["TestHardDataset/Unseen/case4_5"]
    r = read_frame_folder(case["frame_dir"], case["gt_dir"])
    assert r.frames.shape == (6, 36, 44, 3) and r.annotated_frames == list(range(6))
    raw = read_frame_folder(case["frame_dir"], case["gt_dir"], binarize=False)
    assert set(np.unique(raw.labels[0]).tolist()) == {0, 255}
    centres = [np.nonzero(r.labels[t])[1].mean() for t in range(6)]
    assert centres == pytest.approx(case["centre_x"], abs=0.6)  # the polyp moves right in true frame order
    assert all(b > a for a, b in zip(centres, centres[1:]))
    inside, outside = r.frames[0][r.labels[0] == 1], r.frames[0][r.labels[0] == 0]
    assert inside[:, 0].mean() > outside[:, 0].mean() + 10  # RGB: the polyp is redder than the mucosa
    r.validate(num_classes=1)


def test_sunseg_missing_gt(tmp_path):
    info = write_sunseg(tmp_path, train_cases=1, test_cases=1, frames=4, missing_gt=True)
    case = info["cases"]["TrainDataset/case1_1"]
    assert not info["missing_gt"].exists() and info["missing_gt"].parent == case["gt_dir"]
    with pytest.raises(DataError) as e:
        read_frame_folder(case["frame_dir"], case["gt_dir"])
    assert str(info["missing_gt"]) in str(e.value) and case["frames"][1] in str(e.value)
