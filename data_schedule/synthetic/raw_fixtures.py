"""Tiny copies of the public raw layouts (REFERENCE §1.2 CAMUS, §1.3 EchoNet-Dynamic, §1.4 SUN-SEG, §1.5 BTCV and
KiTS23) for tests.

Each writer puts the real folder structure, file names, file formats, label values and axis order under ``root``,
with simple synthetic content (an ellipse "LV" that shrinks from end-diastole to end-systole, a disc "polyp"),
deterministic from a seed and written in well under a second. Options produce the bad inputs that registers must
reject. Each writer returns a dict of what it wrote (paths, ED/ES frames, EF, traced frames, ...) for tests.
"""
from __future__ import annotations

import zlib
from pathlib import Path
from typing import Sequence

import numpy as np

__all__ = ["CAMUS_LABELS", "ECHONET_FILELIST_COLUMNS", "ECHONET_TRACING_COLUMNS", "SUNSEG_TEST_SETS",
           "write_btcv", "write_camus", "write_echonet", "write_echonet_filelist_only", "write_kits23", "write_mhd",
           "write_sunseg"]

CAMUS_LABELS = {0: "background", 1: "LV endocardium", 2: "LV myocardium", 3: "LA"}
ECHONET_FILELIST_COLUMNS = ("FileName", "EF", "ESV", "EDV", "FrameHeight", "FrameWidth", "FPS", "NumberOfFrames",
                            "Split")
ECHONET_TRACING_COLUMNS = ("FileName", "X1", "Y1", "X2", "Y2", "Frame")
SUNSEG_TEST_SETS = ("TestEasyDataset/Seen", "TestEasyDataset/Unseen", "TestHardDataset/Seen",
                    "TestHardDataset/Unseen")
_DISKS = 20  # EchoNet traces: one long axis + 20 disk chords per traced frame


def _ellipse(shape: tuple[int, int], cy: float, cx: float, ry: float, rx: float) -> np.ndarray:
    """Boolean H×W mask of the pixel centres inside an axis-aligned ellipse."""
    y, x = np.ogrid[:shape[0], :shape[1]]
    return ((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2 <= 1.0


def _speckle(rng: np.random.Generator, base: np.ndarray, sigma: float = 8.0) -> np.ndarray:
    return np.clip(base + rng.normal(0.0, sigma, base.shape), 0, 255).astype(np.uint8)


# ------------------------------------------------------------------------------------------------ CAMUS

def _save_nifti(path: Path, arr: np.ndarray, spacing: tuple[float, float]) -> None:
    """Write (T, H, W) or (H, W) as NIfTI (W, H[, T]) with pixdim (dx, dy[, 1]) in mm, keeping the dtype."""
    import nibabel as nib

    data = arr.transpose(2, 1, 0) if arr.ndim == 3 else arr.T  # (T, H, W) -> (W, H, T); (H, W) -> (W, H)
    dy, dx = spacing
    img = nib.Nifti1Image(np.ascontiguousarray(data), np.diag([dx, dy, 1.0, 1.0]))
    img.set_data_dtype(arr.dtype)
    img.header.set_zooms((dx, dy, 1.0)[:data.ndim])
    img.header.set_xyzt_units("mm")
    nib.save(img, str(path))


def _camus_frame(rng, size, scale: float, la_scale: float) -> tuple[np.ndarray, np.ndarray]:
    """One apical frame: LV cavity (1) inside a myocardium ring (2), LA (3) below; image uint8, label uint8.
    ``scale`` sizes the LV (1 = a typical end-diastole), ``la_scale`` the LA."""
    h, w = size
    cy, cx = 0.42 * h, 0.5 * w
    ry, rx = 0.27 * h * scale, 0.18 * w * scale
    wall = max(2.0, 0.06 * w)
    endo = _ellipse(size, cy, cx, ry, rx)
    epi = _ellipse(size, cy, cx, ry + wall, rx + wall)
    la = _ellipse(size, 0.83 * h, cx, 0.11 * h * la_scale, 0.16 * w * la_scale) & ~epi
    label = np.zeros(size, np.uint8)
    label[epi] = 2
    label[endo] = 1
    label[la] = 3
    grey = np.full(size, 70.0)
    grey[epi] = 165.0
    grey[endo | la] = 22.0
    return _speckle(rng, grey), label


def _camus_split(names: list[str]) -> dict[str, list[str]]:
    """Official-style 80/10/10 split, in patient order (at least one validation and test patient from 3 on)."""
    n = len(names)
    k = max(1, round(0.1 * n)) if n >= 3 else 0
    return {"training": names[:n - 2 * k], "validation": names[n - 2 * k:n - k], "testing": names[n - k:]}


def write_camus(root: str | Path, patients: Sequence[int] = (1, 2, 3), views: Sequence[str] = ("2CH", "4CH"),
                frames: int = 6, size: tuple[int, int] = (40, 32), spacing: tuple[float, float] = (0.3, 0.15),
                seed: int = 0, reversed_views: Sequence[tuple[int, str]] | None = None,
                bad_label_shape: int | None = None, missing_split_patient: int | None = None) -> dict:
    """CAMUS NIfTI release: ``root/database_nifti/patientXXXX/`` and ``root/database_split/``.

    Per patient and view: ``patientXXXX_{view}_{ED,ES}[_gt].nii.gz`` (one 2-D (W, H) frame),
    ``patientXXXX_{view}_half_sequence[_gt].nii.gz`` ((W, H, T), every frame labelled: 0 background,
    1 LV endocardium, 2 LV myocardium, 3 LA) and ``Info_{view}.cfg``; images and labels uint8, pixdim (dx, dy).
    size is (H, W) of a frame; spacing is (dy, dx) in mm. A half sequence runs ED -> ES (ED: 1, ES: NbFrame) or,
    for the (patient, view) pairs in ``reversed_views`` (default: the last patient's last view), ES -> ED, as
    real CAMUS clips do. ED is the frame with the largest LV cavity, ES the smallest.

    bad_label_shape: that patient's first half-sequence label is two columns narrower than its image.
    missing_split_patient: that patient is listed in ``subgroup_training.txt`` without a folder.
    Returns {"root", "size", "spacing", "patients": {name: {"EF", "Sex", "Age", "views": {view: {"ED", "ES",
    "NbFrame", "FrameRate", "ImageQuality", "reversed", "lv_area"}}}}, "split", "bad_label_file",
    "missing_split_patient"}.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    if reversed_views is None:
        reversed_views = [(patients[-1], views[-1])] if patients and views else []
    rev = {(int(p), v) for p, v in reversed_views}
    out: dict = {"root": root, "size": tuple(size), "spacing": tuple(spacing), "patients": {},
                 "bad_label_file": None, "missing_split_patient": None}
    for pid in patients:
        name = f"patient{pid:04d}"
        pdir = root / "database_nifti" / name
        pdir.mkdir(parents=True, exist_ok=True)
        es_scale = float(rng.uniform(0.7, 0.82))
        heart = float(rng.uniform(0.85, 1.05))  # this patient's LV size at ED
        ef = round(100.0 * (1.0 - es_scale ** 3), 1)  # volume ~ scale^3: the same EF in both views
        sex, age = str(rng.choice(["F", "M"])), int(rng.integers(25, 90))
        info: dict = {"EF": ef, "Sex": sex, "Age": age, "views": {}}
        for vi, view in enumerate(views):
            # cosine from ED (scale 1) to ES (es_scale); the LA fills while the LV empties
            u = (1 - np.cos(np.pi * np.arange(frames) / max(frames - 1, 1))) / 2
            scales = heart * (1.0 - (1.0 - es_scale) * u)
            if (pid, view) in rev:
                scales = scales[::-1]
            pairs = [_camus_frame(rng, size, s, 1.0 + 0.6 * (heart - s)) for s in scales]
            img = np.stack([p[0] for p in pairs])
            lab = np.stack([p[1] for p in pairs])
            ed, es = (frames, 1) if (pid, view) in rev else (1, frames)
            stem = pdir / f"{name}_{view}"
            _save_nifti(Path(f"{stem}_half_sequence.nii.gz"), img, spacing)
            gt = lab
            if bad_label_shape == pid and vi == 0:
                gt = lab[:, :, :-2]
                out["bad_label_file"] = Path(f"{stem}_half_sequence_gt.nii.gz")
            _save_nifti(Path(f"{stem}_half_sequence_gt.nii.gz"), np.ascontiguousarray(gt), spacing)
            for phase, idx in (("ED", ed), ("ES", es)):
                _save_nifti(Path(f"{stem}_{phase}.nii.gz"), img[idx - 1], spacing)
                _save_nifti(Path(f"{stem}_{phase}_gt.nii.gz"), lab[idx - 1], spacing)
            fps = float(rng.choice([25.0, 33.0, 50.0]))
            quality = str(rng.choice(["Good", "Medium", "Poor"]))
            # key order of the NIfTI release's Info_*.cfg, as far as we know it
            cfg = {"ED": ed, "ES": es, "NbFrame": frames, "Sex": sex, "Age": age, "ImageQuality": quality,
                   "EF": ef, "FrameRate": f"{fps:g}"}
            (pdir / f"Info_{view}.cfg").write_text("".join(f"{k}: {v}\n" for k, v in cfg.items()))
            info["views"][view] = {"ED": ed, "ES": es, "NbFrame": frames, "FrameRate": fps, "ImageQuality": quality,
                                   "reversed": (pid, view) in rev,
                                   "lv_area": [int((f == 1).sum()) for f in lab]}
        out["patients"][name] = info
    split = _camus_split([f"patient{p:04d}" for p in patients])
    if missing_split_patient is not None:
        out["missing_split_patient"] = f"patient{missing_split_patient:04d}"
        split["training"] = split["training"] + [out["missing_split_patient"]]
    sdir = root / "database_split"
    sdir.mkdir(parents=True, exist_ok=True)
    for part, names in split.items():
        (sdir / f"subgroup_{part}.txt").write_text("".join(f"{n}\n" for n in names))
    out["split"] = split
    return out


# ------------------------------------------------------------------------------------------------ MetaImage

_MET_NAMES = {np.dtype(np.uint8): "MET_UCHAR", np.dtype(np.int8): "MET_CHAR", np.dtype(np.int16): "MET_SHORT",
              np.dtype(np.uint16): "MET_USHORT", np.dtype(np.int32): "MET_INT", np.dtype(np.uint32): "MET_UINT",
              np.dtype(np.float32): "MET_FLOAT", np.dtype(np.float64): "MET_DOUBLE"}


def write_mhd(path: str | Path, frames: np.ndarray, spacing: tuple[float, float] | None = None,
              compressed: bool = False, msb: bool = False) -> Path:
    """Write (T, H, W) (NDims 3, DimSize W H T) or (H, W) (NDims 2) as ``path`` (.mhd) + ``<stem>.raw``, like the
    legacy CAMUS release; ``compressed`` stores zlib data (and names it ``.zraw``), ``msb`` big-endian samples.
    spacing is (dy, dx) in mm. Returns the header path."""
    path = Path(path)
    dims = list(reversed(frames.shape))  # C order (T, H, W) = x fastest: DimSize W H T
    order = ">" if msb else "<"
    data = np.ascontiguousarray(frames, dtype=frames.dtype.newbyteorder(order)).tobytes()
    raw = path.with_suffix(".zraw" if compressed else ".raw")
    lines = ["ObjectType = Image", f"NDims = {frames.ndim}", "BinaryData = True",
             f"BinaryDataByteOrderMSB = {msb}", f"CompressedData = {compressed}"]
    if compressed:
        data = zlib.compress(data)
        lines.append(f"CompressedDataSize = {len(data)}")
    if spacing is not None:
        lines.append("ElementSpacing = " + " ".join(map(str, [spacing[1], spacing[0], 1.0][:frames.ndim])))
    lines += ["DimSize = " + " ".join(map(str, dims)), f"ElementType = {_MET_NAMES[frames.dtype.newbyteorder('=')]}",
              f"ElementDataFile = {raw.name}"]
    path.write_text("\n".join(lines) + "\n")
    raw.write_bytes(data)
    return path


# ------------------------------------------------------------------------------------------------ EchoNet

def _hex_name(rng: np.random.Generator) -> str:
    return "0X" + "".join(rng.choice(list("0123456789ABCDEF"), 16))


def _write_avi(path: Path, frames: np.ndarray, fps: float, codec: str) -> None:
    import cv2

    t, h, w = frames.shape
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*codec), fps, (w, h), True)
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot write {codec} video {path}")
    for f in frames:
        writer.write(np.repeat(f[:, :, None], 3, axis=2))  # 3-channel grey, as EchoNet's videos
    writer.release()


def _trace(cy: float, cx: float, ry: float, rx: float) -> list[tuple[float, float, float, float]]:
    """Long axis (apex -> mitral plane) then ``_DISKS`` chords across the LV ellipse, as (X1, Y1, X2, Y2)."""
    rows = [(cx, cy - ry, cx, cy + ry)]
    for k in range(_DISKS):
        y = cy - ry + (k + 0.5) * 2 * ry / _DISKS
        half = rx * np.sqrt(max(0.0, 1.0 - ((y - cy) / ry) ** 2))
        rows.append((cx - half, y, cx + half, y))
    return rows


def _disk_volume(rows, cm_per_px: float) -> float:
    """Single-plane method of disks from one trace: sum of pi (d/2)^2 h with h = long axis / number of disks, mL."""
    (x1, y1, x2, y2), chords = rows[0], rows[1:]
    length = np.hypot(x2 - x1, y2 - y1) * cm_per_px
    d = np.array([np.hypot(c[2] - c[0], c[3] - c[1]) for c in chords]) * cm_per_px
    return float(np.sum(np.pi * (d / 2) ** 2) * length / len(chords))


def write_echonet(root: str | Path, videos: int = 5, frames: int = 20, size: int = 112, fps: float = 50.0,
                  seed: int = 0, codec: str = "FFV1", short_trace: int | None = None, orphan_trace: bool = False,
                  drop_column: str | None = None, broken_video: int | None = None) -> dict:
    """EchoNet-Dynamic layout: ``root/Videos/<FileName>.avi``, ``root/FileList.csv``, ``root/VolumeTracings.csv``.

    Videos are size×size, 3-channel grey, ``frames`` long, written with ``codec`` (FFV1: lossless, so a read-back
    equals what was drawn; "MJPG" for a lossy file). FileList FileName has no extension, VolumeTracings FileName
    has ".avi"; each video has two traced frames, rows of the ES (smaller) trace first, then ED, each trace a long
    axis row then 20 disk chords. EDV / ESV are the method-of-disks volumes of those traces, EF = 100 (EDV-ESV)/EDV.
    Split cycles TRAIN, TRAIN, TRAIN, VAL, TEST.

    short_trace: that video has only its ES frame traced. orphan_trace: tracing rows for a video that does not
    exist. drop_column: FileList.csv lacks that column. broken_video: that AVI is cut to its first 300 bytes.
    Returns {"root", "videos": {FileName: {"ED", "ES", "EF", "EDV", "ESV", "Split", "traced", "frames"}},
    "orphan", "short_trace", "broken_video"}, "frames" being the T×H×W uint8 array drawn.
    """
    root = Path(root)
    (root / "Videos").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    cm_per_px = 11.2 / size
    splits = ("TRAIN", "TRAIN", "TRAIN", "VAL", "TEST")
    out: dict = {"root": root, "videos": {}, "orphan": None, "short_trace": None, "broken_video": None}
    filelist, tracings = [], []
    y, x = np.mgrid[:size, :size]
    sector = (np.abs(x - size / 2) < (y + 2) * 0.75) & (np.hypot(x - size / 2, y) < size * 0.98)
    for i in range(videos):
        name = _hex_name(rng)
        gap = int(rng.integers(max(1, frames // 4), max(2, frames // 2)))
        first = int(rng.integers(0, max(1, frames - gap)))
        t_ed, t_es = (first, first + gap) if i % 2 == 0 else (first + gap, first)
        es_scale = float(rng.uniform(0.68, 0.82))
        heart = float(rng.uniform(0.85, 1.1))
        cy, cx, ry, rx = 0.45 * size, 0.5 * size, 0.28 * size * heart, 0.15 * size * heart
        wall = max(2.0, 0.05 * size)
        video = np.empty((frames, size, size), np.uint8)
        scale_of = {}
        for t in range(frames):
            s = es_scale + (1 - es_scale) * (1 + np.cos(np.pi * (t - t_ed) / (t_es - t_ed))) / 2
            scale_of[t] = s
            grey = np.where(sector, 75.0, 0.0)
            grey[_ellipse((size, size), cy, cx, ry * s + wall, rx * s + wall)] = 170.0
            grey[_ellipse((size, size), cy, cx, ry * s, rx * s)] = 20.0
            video[t] = np.where(sector, _speckle(rng, grey, 6.0), 0)
        _write_avi(root / "Videos" / f"{name}.avi", video, fps, codec)
        traces = {t: _trace(cy, cx, ry * scale_of[t], rx * scale_of[t]) for t in (t_es, t_ed)}
        esv, edv = _disk_volume(traces[t_es], cm_per_px), _disk_volume(traces[t_ed], cm_per_px)
        traced = [t_es] if short_trace == i else [t_es, t_ed]
        for t in traced:  # ES rows first, then ED
            tracings += [(f"{name}.avi", *r, t) for r in traces[t]]
        split = splits[i % len(splits)]
        ef = 100.0 * (edv - esv) / edv
        filelist.append({"FileName": name, "EF": f"{ef:.4f}", "ESV": f"{esv:.4f}", "EDV": f"{edv:.4f}",
                         "FrameHeight": size, "FrameWidth": size, "FPS": f"{fps:g}", "NumberOfFrames": frames,
                         "Split": split})
        out["videos"][name] = {"ED": t_ed, "ES": t_es, "EF": ef, "EDV": edv, "ESV": esv, "Split": split,
                               "traced": traced, "frames": video}
        if short_trace == i:
            out["short_trace"] = name
        if broken_video == i:
            path = root / "Videos" / f"{name}.avi"
            path.write_bytes(path.read_bytes()[:300])
            out["broken_video"] = name
    if orphan_trace:
        orphan = "0X00000000DEADBEEF"
        tracings += [(f"{orphan}.avi", *r, 3) for r in _trace(size / 2, size / 2, size / 4, size / 8)]
        out["orphan"] = orphan
    columns = [c for c in ECHONET_FILELIST_COLUMNS if c != drop_column]
    lines = [",".join(columns)] + [",".join(str(row[c]) for c in columns) for row in filelist]
    (root / "FileList.csv").write_text("\n".join(lines) + "\n")
    rows = [",".join(ECHONET_TRACING_COLUMNS)]
    rows += [f"{n},{x1:.6f},{y1:.6f},{x2:.6f},{y2:.6f},{t}" for n, x1, y1, x2, y2, t in tracings]
    (root / "VolumeTracings.csv").write_text("\n".join(rows) + "\n")
    return out


def write_echonet_filelist_only(path: str | Path, rows: int = 10000, seed: int = 0,
                                tracings: str | Path | None = None) -> dict:
    """A large FileList.csv (no videos) for an indexing-speed benchmark; Split 80 % TRAIN, 10 % VAL, 10 % TEST.
    ``tracings``: also write a matching VolumeTracings.csv there, two traced frames per video (ES rows first, then
    ED), each a long axis and 20 disk chords, like the real file (~42 rows per video).
    Returns {"path", "rows", "splits": {split: count}, "tracings": path or None, "tracing_rows"}."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, 2 ** 63, size=rows, dtype=np.int64)
    ef = rng.uniform(15, 80, rows)
    edv = rng.uniform(40, 250, rows)
    esv = edv * (1 - ef / 100)
    fps = rng.choice([30, 50, 60], rows)
    nf = rng.integers(28, 1000, rows)
    split = np.array(["TRAIN"] * 8 + ["VAL", "TEST"])[np.arange(rows) % 10]
    names = [f"0X{i:016X}" for i in ids]
    body = [f"{name},{e:.2f},{s:.2f},{d:.2f},112,112,{f},{n},{sp}"
            for name, e, s, d, f, n, sp in zip(names, ef, esv, edv, fps, nf, split)]
    path.write_text(",".join(ECHONET_FILELIST_COLUMNS) + "\n" + "\n".join(body) + "\n")
    names_, counts = np.unique(split, return_counts=True)
    out = {"path": path, "rows": rows, "splits": dict(zip(names_.tolist(), counts.tolist())), "tracings": None,
           "tracing_rows": 0}
    if tracings is not None:
        tracings = Path(tracings)
        ed = rng.integers(0, nf // 2)
        es = ed + rng.integers(5, nf // 2)  # < nf: both traced frames lie inside the video
        lines = [",".join(ECHONET_TRACING_COLUMNS)]
        for name, t_es, t_ed, scale in zip(names, es, ed, rng.uniform(0.7, 1.0, rows)):
            for t, s in ((t_es, 0.8 * scale), (t_ed, scale)):
                lines += [f"{name}.avi,{x1:.6f},{y1:.6f},{x2:.6f},{y2:.6f},{t}"
                          for x1, y1, x2, y2 in _trace(50.0, 56.0, 30.0 * s, 17.0 * s)]
        tracings.write_text("\n".join(lines) + "\n")
        out.update(tracings=tracings, tracing_rows=len(lines) - 1)
    return out


# ------------------------------------------------------------------------------------------------ SUN-SEG

def _sunseg_case(rng, frame_dir: Path, gt_dir: Path, frames: int, size: tuple[int, int],
                 skip_gt: int | None) -> dict:
    """One clip: ``frames`` JPGs in two acquisition segments a9 / a10 (``..._a9_ayy_image0001.jpg``), a polyp
    disc moving left to right in true order, and 0/255 PNG masks of the same basename."""
    import cv2

    frame_dir.mkdir(parents=True, exist_ok=True)
    gt_dir.mkdir(parents=True, exist_ok=True)
    prefix = (f"case_M_2018{int(rng.integers(1, 13)):02d}{int(rng.integers(1, 29)):02d}"
              f"{int(rng.integers(80000, 170000)):06d}_0U{int(rng.integers(10 ** 13, 10 ** 14))}_1_005_001-1")
    h, w = size
    first = (frames + 1) // 2
    names, centres = [], []
    y, x = np.mgrid[:h, :w]
    for t in range(frames):
        seg, n = (9, t + 1) if t < first else (10, t - first + 1)
        stem = f"{prefix}_a{seg}_ayy_image{n:04d}"
        cx = w * (0.3 + 0.4 * t / max(frames - 1, 1))
        cy, r = h * 0.5, 0.2 * min(h, w)
        disc = _ellipse(size, cy, cx, r, r)
        rgb = np.stack([150 + 60 * y / h, 70 + 20 * x / w, 60 + 0 * x], -1)  # pinkish mucosa
        rgb[disc] = (205.0, 120.0, 95.0)
        cv2.imwrite(str(frame_dir / f"{stem}.jpg"), _speckle(rng, rgb, 4.0)[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])
        if t != skip_gt:
            cv2.imwrite(str(gt_dir / f"{stem}.png"), disc.astype(np.uint8) * 255)
        names.append(f"{stem}.jpg")
        centres.append(cx)
    return {"frame_dir": frame_dir, "gt_dir": gt_dir, "frames": names, "centre_x": centres}


def write_sunseg(root: str | Path, train_cases: int = 2, test_cases: int = 1, frames: int = 6,
                 size: tuple[int, int] = (36, 44), seed: int = 0, missing_gt: bool = False) -> dict:
    """SUN-SEG layout: ``root/TrainDataset/{Frame,GT}/<case>/`` and ``root/Test{Easy,Hard}Dataset/{Seen,Unseen}/
    {Frame,GT}/<case>/``; cases ``case<N>_<k>`` (a Seen test case shares N with a training case, an Unseen one
    does not), frames ``.jpg`` named like the real ones, so lexical order (``a10`` before ``a9``) differs from
    numeric order; GT a ``.png`` of the same basename, 0 background / 255 polyp. size is (H, W).

    missing_gt: the first training case's second frame has no GT png.
    Returns {"root", "cases": {"<set>/<case>": {"frame_dir", "gt_dir", "frames" (names in true order),
    "centre_x"}}, "missing_gt": the GT path not written, or None}.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    out: dict = {"root": root, "cases": {}, "missing_gt": None}
    plan = [("TrainDataset", f"case{n}_1") for n in range(1, train_cases + 1)]
    next_case = train_cases + 1
    for k, test_set in enumerate(SUNSEG_TEST_SETS):
        for j in range(test_cases):
            if test_set.endswith("/Seen"):
                number = j % max(train_cases, 1) + 1
            else:
                number, next_case = next_case, next_case + 1
            plan.append((test_set, f"case{number}_{k + 2}"))
    for i, (part, case) in enumerate(plan):
        skip = 1 if missing_gt and i == 0 else None
        info = _sunseg_case(rng, root / part / "Frame" / case, root / part / "GT" / case, frames, size, skip)
        out["cases"][f"{part}/{case}"] = info
        if skip is not None:
            out["missing_gt"] = info["gt_dir"] / (Path(info["frames"][skip]).stem + ".png")
    return out


# ------------------------------------------------------------------------------------------------ BTCV / KiTS23

def _ct_case(rng: np.random.Generator, shape: tuple[int, int, int], organs: Sequence[int]) -> tuple[np.ndarray,
                                                                                                       np.ndarray]:
    """(HU int16, labels uint8), both (z, y, x): one ellipsoid per label value in ``organs``, spread along z, in
    soft tissue (40 HU) with noise; the first and last slice stay empty."""
    z, h, w = shape
    zz, yy, xx = np.ogrid[:z, :h, :w]
    lab = np.zeros(shape, np.uint8)
    img = rng.normal(40.0, 10.0, shape)
    for i, v in enumerate(organs):
        cz = 1 + (z - 2) * (i + 0.5) / len(organs)
        cy, cx = rng.uniform(0.3, 0.7) * h, (0.25 + 0.5 * (i % 2)) * w
        rz = max(z / (2 * len(organs)) + 0.5, 1.0)
        m = ((zz - cz) / rz) ** 2 + ((yy - cy) / (h / 5)) ** 2 + ((xx - cx) / (w / 6)) ** 2 <= 1.0
        m[0] = m[-1] = False
        lab[m] = v
        img[m] = 60.0 + 40.0 * i
    return np.rint(img).astype(np.int16), lab


def _save_volume(path: Path, arr: np.ndarray, affine: np.ndarray) -> None:
    import nibabel as nib

    img = nib.Nifti1Image(np.ascontiguousarray(arr), affine)
    img.set_data_dtype(arr.dtype)
    img.header.set_xyzt_units("mm")
    nib.save(img, str(path))


def write_btcv(root: str | Path, cases: Sequence[int] = (1, 2, 3, 4, 5, 6), shape: tuple[int, int, int] = (8, 24, 24),
               organs: Sequence[int] = (1, 2, 6), spacing: tuple[float, float, float] = (2.5, 0.8, 0.8),
               seed: int = 0, bad_label_shape: int | None = None, bad_affine: int | None = None) -> dict:
    """``<root>/BTCV/RawData/Training/{img/img00XX, label/label00XX}.nii.gz``: (x, y, z) on disk, RAS affine with
    ``spacing`` (dz, dy, dx); ``organs`` are BTCV label values. ``bad_label_shape`` / ``bad_affine``: that case's
    label has one slice less / another affine."""
    base = Path(root) / "BTCV" / "RawData" / "Training"
    (base / "img").mkdir(parents=True, exist_ok=True)
    (base / "label").mkdir(parents=True, exist_ok=True)
    dz, dy, dx = spacing
    affine = np.diag([dx, dy, dz, 1.0])
    out = {"root": str(root), "cases": []}
    for c in cases:
        img, lab = _ct_case(np.random.default_rng([seed, c]), shape, organs)
        name = f"{c:04d}"
        _save_volume(base / "img" / f"img{name}.nii.gz", img.transpose(2, 1, 0), affine)
        lab_xyz = lab.transpose(2, 1, 0)
        if bad_label_shape == c:
            lab_xyz = lab_xyz[:, :, :-1]
        _save_volume(base / "label" / f"label{name}.nii.gz", lab_xyz,
                     np.diag([dx, dy, dz * 2, 1.0]) if bad_affine == c else affine)
        out["cases"].append(dict(case=f"img{name}", image=img, label=lab))
    return out


def write_kits23(root: str | Path, cases: Sequence[int] = (0, 1, 2, 3, 4, 5), shape: tuple[int, int, int] = (8, 24, 24),
                 spacing: tuple[float, float, float] = (3.0, 0.8, 0.8), seed: int = 0) -> dict:
    """``<root>/KiTS23/dataset/case_XXXXX/{imaging,segmentation}.nii.gz`` stored as KiTS23 does, slices on the
    first array axis (z, y, x) with an affine that says so; labels 1 kidney, 2 tumour (inside the kidney), 3 cyst."""
    base = Path(root) / "KiTS23" / "dataset"
    dz, dy, dx = spacing
    affine = np.array([[0, 0, dx, 0], [0, dy, 0, 0], [dz, 0, 0, 0], [0, 0, 0, 1.0]])  # array axis 0 = S-I
    out = {"root": str(root), "cases": []}
    for c in cases:
        img, lab = _ct_case(np.random.default_rng([seed, 100 + c]), shape, (1, 3))
        kidney = lab == 1
        core = np.zeros_like(kidney)
        zs, ys, xs = np.nonzero(kidney)
        if len(zs):
            cz, cy, cx = int(np.median(zs)), int(np.median(ys)), int(np.median(xs))
            core[max(cz - 1, 0):cz + 1, cy - 2:cy + 2, cx - 2:cx + 2] = True
        lab[kidney & core] = 2  # a tumour inside the kidney
        folder = base / f"case_{c:05d}"
        folder.mkdir(parents=True, exist_ok=True)
        _save_volume(folder / "imaging.nii.gz", img, affine)
        _save_volume(folder / "segmentation.nii.gz", lab, affine)
        out["cases"].append(dict(case=f"case_{c:05d}", image=img, label=lab))
    return out
