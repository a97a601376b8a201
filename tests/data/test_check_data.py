"""Data validation (data_schedule/check_data.py, tools/check_data.py): counts equal the files' own counts on
clean data; every kind of corruption is reported once, with its file, and the scan goes on."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from data_schedule.check_data import EXPECTED_SITES, check_config_datasets, format_report, scan_cardiac_udc

REPO = Path(__file__).resolve().parents[2]
TOOL = REPO / "tools" / "check_data.py"


@pytest.fixture(scope="module")
def clean_base(tmp_path_factory) -> Path:
    """Folder holding a tiny ``cardiacUDC_dataset`` of our own (never modified; tests corrupt copies)."""
    from data_schedule.synthetic.echo_synth import generate_echo_synth

    base = tmp_path_factory.mktemp("check_data")
    generate_echo_synth(base, seed=0, videos_per_site=2, size_scale=0.5, frames=(12, 16), annotated_frames=(2, 3))
    return base


def copy_dataset(src_base: Path, dst_base: Path) -> Path:
    shutil.copytree(src_base / "cardiacUDC_dataset", dst_base / "cardiacUDC_dataset")
    return dst_base / "cardiacUDC_dataset"


def save_thw(path: Path, arr_thw: np.ndarray, dtype) -> None:
    img = nib.Nifti1Image(np.asarray(arr_thw).astype(dtype).transpose(2, 1, 0), np.eye(4))
    img.set_data_dtype(dtype)
    img.header.set_slope_inter(1.0, 0.0)
    nib.save(img, str(path))


def load_thw(path: Path) -> np.ndarray:
    return np.asarray(nib.load(str(path)).dataobj).transpose(2, 1, 0)


def files_truth(root: Path) -> dict:
    """Per-site counts computed straight from the files (nibabel (W, H, T))."""
    out = {}
    for sdir in sorted(root.glob("Site_*")):
        t = dict(videos=0, frames=0, annotated_frames=0, labelled_videos=0, unlabelled_videos=0, values=set(),
                 H=set(), W=set(), T=set())
        for img in sorted(sdir.glob("*_image.nii.gz")):
            w, h, n = nib.load(str(img)).shape
            t["videos"] += 1
            t["frames"] += n
            t["H"].add(h), t["W"].add(w), t["T"].add(n)
            lab = img.with_name(img.name.replace("_image", "_label"))
            if lab.exists():
                arr = np.asarray(nib.load(str(lab)).dataobj)
                t["labelled_videos"] += 1
                t["annotated_frames"] += int(arr.any(axis=(0, 1)).sum())
                t["values"] |= set(np.unique(arr).tolist())
            else:
                t["unlabelled_videos"] += 1
        out[sdir.name] = t
    return out


def test_clean_report_matches_the_files(clean_base):
    root = clean_base / "cardiacUDC_dataset"
    report = scan_cardiac_udc(clean_base)  # the folder holding cardiacUDC_dataset is accepted too
    assert report["root"] == str(root)
    assert report["problems"] == [] and report["totals"]["problems"] == 0
    truth = files_truth(root)
    assert list(report["sites"]) == EXPECTED_SITES == list(truth)
    for site, t in truth.items():
        s = report["sites"][site]
        for k in ("videos", "frames", "annotated_frames", "labelled_videos", "unlabelled_videos"):
            assert s[k] == t[k], (site, k)
        assert s["label_values"] == sorted(t["values"])
        assert s["height_range"] == [min(t["H"]), max(t["H"])]
        assert s["width_range"] == [min(t["W"]), max(t["W"])]
        assert s["frames_range"] == [min(t["T"]), max(t["T"])]
        assert s["problems"] == 0 and not s["missing"]
    tot = report["totals"]
    assert tot["videos"] == 12 and tot["sites"] == 6
    assert tot["frames"] == sum(t["frames"] for t in truth.values())
    assert tot["annotated_frames"] == sum(t["annotated_frames"] for t in truth.values())
    assert tot["unlabelled_videos"] == sum(t["unlabelled_videos"] for t in truth.values()) == 3  # G_100 + R_73
    assert tot["label_values"] == [0, 1, 2, 3, 4]
    assert tot["height_range"] == [min(min(t["H"]) for t in truth.values()), max(max(t["H"]) for t in truth.values())]
    assert tot["width_range"] == [min(min(t["W"]) for t in truth.values()), max(max(t["W"]) for t in truth.values())]
    json.dumps(report)  # plain data
    text = format_report(report)
    assert text.splitlines()[-1] == (f"12 videos, {tot['frames']} frames, {tot['annotated_frames']} annotated "
                                     f"frames, 3 unlabelled videos; 0 problems")
    for site in EXPECTED_SITES:
        assert site in text


def test_every_corruption_is_reported_once_and_the_scan_goes_on(clean_base, tmp_path):
    root = copy_dataset(clean_base, tmp_path)
    imgs = {s: sorted((root / s).glob("*_image.nii.gz")) for s in EXPECTED_SITES}
    lab = lambda p: p.with_name(p.name.replace("_image", "_label"))  # noqa: E731
    expected: dict[Path, str] = {}

    # the six of the brief
    p = imgs["Site_G_20"][0]
    p.write_bytes(p.read_bytes()[:300])
    expected[p] = "truncated"
    p = lab(imgs["Site_G_29"][0])
    arr = load_thw(p).copy()
    arr[np.flatnonzero(arr.reshape(len(arr), -1).any(1))[0], 0, 0] = 7
    save_thw(p, arr, np.int8)
    expected[p] = "outside 0..4"
    p = lab(imgs["Site_R_126"][0])
    save_thw(p, load_thw(p)[:, :, :-3], np.int8)
    expected[p] = "differs from the image"
    p = imgs["Site_R_52"][0]
    save_thw(p, load_thw(p).astype(np.int16), np.int16)
    expected[p] = "expected uint8"
    for f in (root / "Site_G_100").iterdir():
        f.unlink()
    expected[root / "Site_G_100"] = "empty site folder"
    p = root / "Site_R_73" / "patient-999-4_label.nii.gz"
    save_thw(p, np.zeros((12, 20, 24)), np.int8)
    expected[p] = "orphan label"
    # and the other checks, on the second video of some sites
    p = imgs["Site_G_20"][1]
    save_thw(p, np.zeros(load_thw(p).shape), np.uint8)
    expected[p] = "empty video"
    p = lab(imgs["Site_G_29"][1])
    save_thw(p, np.zeros(load_thw(p).shape), np.int8)
    expected[p] = "zero annotated frames"
    p = lab(imgs["Site_R_126"][1])
    save_thw(p, load_thw(p), np.float32)
    expected[p] = "non-integer label dtype float32"
    p = imgs["Site_R_52"][1]
    nib.save(nib.Nifti1Image(np.ones((20, 16, 4, 2), np.uint8), np.eye(4)), str(p))
    expected[p] = "not 3-D"

    report = scan_cardiac_udc(root)
    got = [(Path(q["file"]), q["reason"]) for q in report["problems"]]
    assert len(got) == len(expected), "\n".join(f"{f}: {r}" for f, r in got)
    for path, phrase in expected.items():
        hits = [r for f, r in got if f == path]
        assert len(hits) == 1 and phrase in hits[0], (path, hits)
    # the rest is still scanned and counted
    sites = report["sites"]
    assert list(sites) == EXPECTED_SITES
    assert sites["Site_G_100"]["videos"] == 0 and sites["Site_G_100"]["problems"] == 1
    assert sites["Site_G_29"]["videos"] == 2 and sites["Site_G_29"]["label_values"] == [0, 1, 2, 3, 4, 7]
    assert sites["Site_R_73"]["videos"] == 2 and sites["Site_R_73"]["unlabelled_videos"] == 2
    assert sites["Site_G_20"]["frames"] == load_thw(imgs["Site_G_20"][1]).shape[0]  # the truncated one is not
    assert report["totals"]["problems"] == len(expected) == 10
    text = format_report(report)
    assert "Site_G_20/" + imgs["Site_G_20"][0].name + " — unreadable or truncated" in text
    assert text.splitlines()[-1].endswith("; 10 problems")


def test_missing_sites_and_site_selection(clean_base, tmp_path):
    root = copy_dataset(clean_base, tmp_path)
    shutil.rmtree(root / "Site_R_73")
    report = scan_cardiac_udc(root)
    assert report["problems"] == [{"file": str(root / "Site_R_73"), "reason": "missing expected site folder"}]
    assert report["sites"]["Site_R_73"]["missing"] and report["totals"]["sites"] == 5
    assert "MISSING" in format_report(report)
    report = scan_cardiac_udc(root, sites=["Site_G_29"])
    assert list(report["sites"]) == ["Site_G_29"] and report["problems"] == []
    assert report["totals"]["videos"] == 2


def test_cli_exit_codes(clean_base, tmp_path):
    bad = copy_dataset(clean_base, tmp_path / "bad")
    lab = sorted((bad / "Site_G_29").glob("*_label.nii.gz"))[0]
    arr = load_thw(lab).copy()
    arr[0, 0, 0] = 9
    save_thw(lab, arr, np.int8)

    def start(*args):
        return subprocess.Popen([sys.executable, str(TOOL), *args], cwd=REPO, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)

    runs = {"ok": start("--root", str(clean_base), "--json", str(tmp_path / "ok.json")),
            "bad": start("--root", str(bad)),
            "missing": start("--root", str(tmp_path / "nope"))}
    out = {k: (p.wait(timeout=120), *p.communicate()) for k, p in runs.items()}
    rc, stdout, _ = out["ok"]
    assert rc == 0, out["ok"]
    assert stdout.strip().splitlines()[-1].endswith("3 unlabelled videos; 0 problems")
    assert json.loads((tmp_path / "ok.json").read_text())["totals"]["videos"] == 12
    rc, stdout, _ = out["bad"]
    assert rc == 1 and f"Site_G_29/{lab.name} — label values outside 0..4: 9" in stdout, out["bad"]
    rc, stdout, stderr = out["missing"]
    assert rc == 2 and str(tmp_path / "nope") in stderr and "DATASET_PATH" in stderr and "echo_synth" in stderr
    assert len(stderr.strip().splitlines()) == 1


def test_check_config_datasets(clean_base, monkeypatch):
    from core.catalog import DatasetCatalog
    from core.config import load_config
    from core.catalog import DatasetRoots

    monkeypatch.setenv("ECHO_SYNTH_ROOT", str(clean_base))
    DatasetRoots.set("echo_synth", None)
    DatasetCatalog.clear_cache()
    cfg = load_config(REPO / "configs" / "cardiac" / "unet_tiny.py")
    text, n = check_config_datasets(cfg)
    assert n == 0
    assert str(clean_base / "cardiacUDC_dataset") in text
    assert text.count("Dataset check:") == 1  # train and test share one family: scanned once
    assert "echo_synth (echo_synth_random_train, echo_synth_random_test)" in text

    monkeypatch.delenv("DATASET_PATH", raising=False)
    DatasetRoots.set("cardiac_udc", None)
    cfg = load_config(REPO / "configs" / "cardiac" / "unet_tiny.py",
                      ["data.train=[cardiac_udc_random_train]", "data.evaluate=[echo_synth_site_test]"])
    text, n = check_config_datasets(cfg)
    assert n == 1 and "DATASET_PATH" in text and text.count("Dataset check:") == 1
