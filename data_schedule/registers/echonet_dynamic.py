"""EchoNet-Dynamic register (``$DATASET_PATH/EchoNet-Dynamic``, REFERENCE §1.3): A4C videos with the LV traced at
end-systole and end-diastole.

Layout: ``Videos/<FileName>.avi`` (112×112, 3-channel grey), ``FileList.csv`` (one row per video: FileName, EF,
ESV, EDV, FPS, NumberOfFrames, Split, ...) and ``VolumeTracings.csv`` (FileName, X1, Y1, X2, Y2, Frame). Per
traced frame the first row is the long axis and the others are disk chords; the LV outline is X1[1:] followed by
X2[1:] reversed (same for Y). The first traced frame of a video in the file is ES, the last ED (as EchoNet's own
loader reads them); frames traced in between are ignored.

Names ``echonet_dynamic_{train,val,test}`` follow FileList's Split column (TRAIN / VAL / TEST, any case). One class,
``LV`` (label 1). A sample is one traced frame: two per video (ES first, then ED), in every split; evaluation
scores that frame of an 11-frame clip (the clip protocol). Each meta carries ``phase`` ("ES"/"ED") and the
video's ``es``, ``ed``, ``ef``, ``edv``, ``esv``, ``fps``, ``num_frames``, so both frames of a video can also be
scored together later.

Building a list reads the two CSVs only (``num_frames`` is FileList's NumberOfFrames): no video is decoded until
a sample is first read (``LazyVideo``), where an undecodable AVI is a ``DataError`` naming it. Videos with fewer
than two traced frames are left out and counted (one warning; ``MetadataCatalog.get(name).skipped_videos``).
"""
from __future__ import annotations

import csv
import gc
import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.catalog import BadData, DatasetCatalog, DatasetRoots, MetadataCatalog
from data_schedule.check_data import finish_report, new_group, widen
from data_schedule.sources.avi import read_avi
from data_schedule.sources.base import VideoRecord, file_key
from data_schedule.sources.cache import LazyVideo
from data_schedule.sources.nifti import DataError

logger = logging.getLogger(__name__)

FAMILY = "echonet_dynamic"
FOLDER = "EchoNet-Dynamic"
CLASSES = ["LV"]
COLORS = [(230, 60, 60)]
SPLITS = {"train": "TRAIN", "val": "VAL", "test": "TEST"}  # name suffix -> FileList Split value
FILELIST_COLUMNS = ("FileName", "EF", "ESV", "EDV", "FPS", "NumberOfFrames", "Split")  # the ones we use
TRACING_COLUMNS = ("FileName", "X1", "Y1", "X2", "Y2", "Frame")


# ------------------------------------------------------------------------------------------------ root

def _resolve(base: str | None, how: str) -> Path:
    """``<base>/EchoNet-Dynamic``; ``base`` is ``$DATASET_PATH`` or ``data.roots.echonet_dynamic``."""
    if not base:
        raise DataError(f"EchoNet-Dynamic root not set: {DatasetRoots.how_to_set(FAMILY)} (the folder holding "
                        f"{FOLDER}/)")
    root = Path(base) / FOLDER
    if not root.is_dir():
        raise DataError(f"EchoNet-Dynamic folder not found: {root} ({how.lstrip('$')}={base}); expected "
                        f"{root}/FileList.csv, VolumeTracings.csv and Videos/")
    return root


# ------------------------------------------------------------------------------------------------ masks

def trace_mask(trace: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """H×W uint8 LV mask (1 inside) of one traced frame.

    trace: n×4 float rows (X1, Y1, X2, Y2) in pixels; row 0 is the long axis, rows 1.. the disk chords. The
    outline is X1[1:] then X2[1:] reversed (same for Y), vertices rounded to the pixel grid as EchoNet does.
    Filled with ``cv2.fillPoly`` (scikit-image is not installed here; EchoNet uses ``skimage.draw.polygon``):
    cv2 also fills the pixels the outline passes through, so the mask can be up to one pixel wider at the
    border than EchoNet's.
    """
    import cv2

    x = np.concatenate([trace[1:, 0], trace[1:, 2][::-1]])
    y = np.concatenate([trace[1:, 1], trace[1:, 3][::-1]])
    pts = np.stack([np.rint(x), np.rint(y)], axis=1).astype(np.int32)
    mask = np.zeros(shape, np.uint8)
    cv2.fillPoly(mask, [pts], 1)
    return mask


# ------------------------------------------------------------------------------------------------ source

class EchoNetSource:
    """A ``VideoSource`` for one EchoNet video: its AVI and its ES / ED tracings.

    ``read()`` gives frames T×H×W uint8 grey (the AVI's three equal channels reduced with ``cv2.cvtColor``
    RGB2GRAY: a third of the cache, and the mappers repeat grey to 3 channels anyway) and labels {es, ed} from
    ``trace_mask``. ``key()`` covers the AVI (path, size, mtime) and the tracing coordinates, so an edited
    VolumeTracings.csv is rasterised again."""

    def __init__(self, path: str, traces: dict[int, np.ndarray]):
        self.path, self.traces = str(path), traces

    def read(self) -> VideoRecord:
        import cv2

        rec = read_avi(self.path)
        grey = np.stack([cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in rec.frames])
        labels = {t: trace_mask(tr, grey.shape[1:]) for t, tr in self.traces.items()}
        return VideoRecord(frames=grey, labels=labels, spacing=None, fps=rec.fps, source=self.path)

    def key(self) -> str:
        h = hashlib.sha1()
        for t in sorted(self.traces):
            h.update(f"{t}:".encode())
            h.update(np.ascontiguousarray(self.traces[t], dtype=np.float64).tobytes())
        return f"{file_key(self.path)}|echonet-grey|{h.hexdigest()}"


# ------------------------------------------------------------------------------------------------ index

@dataclass
class EchoNetIndex:
    """What the two CSVs say. ``videos``: FileList rows in file order ({name, split, ef, esv, edv, fps,
    num_frames}); ``traces``: {name: {frame: n×4 (X1, Y1, X2, Y2)}} with frames in file order; ``orphans``:
    traced names that FileList lacks (in order of appearance)."""

    root: Path
    filelist: Path
    tracings: Path
    videos: list[dict]
    traces: dict[str, dict[int, np.ndarray]]
    orphans: list[str]


def _stem(name: str) -> str:
    return name[:-4] if name.lower().endswith(".avi") else name


def _header(path: Path, header: list[str], needed: tuple[str, ...]) -> dict[str, int]:
    cols = {c.strip(): i for i, c in enumerate(header)}
    for c in needed:
        if c not in cols:
            raise DataError(f"{path}: missing column {c!r} (has {', '.join(cols) or 'no header'}; expected "
                            f"{', '.join(needed)})")
    return {c: cols[c] for c in needed}


def _read_filelist(path: Path) -> list[dict]:
    if not path.is_file():
        raise DataError(f"{path}: file not found (EchoNet-Dynamic's per-video list, columns "
                        f"{', '.join(FILELIST_COLUMNS)})")
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    col = _header(path, rows[0] if rows else [], FILELIST_COLUMNS)
    valid = set(SPLITS.values())
    videos = []
    for line, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        try:
            v = dict(name=_stem(row[col["FileName"]].strip()), split=row[col["Split"]].strip().upper(),
                     ef=float(row[col["EF"]]), esv=float(row[col["ESV"]]), edv=float(row[col["EDV"]]),
                     fps=float(row[col["FPS"]]), num_frames=int(row[col["NumberOfFrames"]]))
        except (ValueError, IndexError) as e:
            raise DataError(f"{path}: line {line} cannot be read ({e}); expected numbers in EF, ESV, EDV, FPS and "
                            f"an integer NumberOfFrames") from None
        if v["split"] not in valid:
            raise DataError(f"{path}: line {line} ({v['name']}) has Split {row[col['Split']]!r}, expected one of "
                            f"{', '.join(sorted(valid))}")
        videos.append(v)
    return videos


def _read_tracings(path: Path) -> dict[str, dict[int, np.ndarray]]:
    """{video: {frame: n×4 (X1, Y1, X2, Y2)}}, videos and frames in file order. The numbers go through numpy's C
    parser and the names through one split per line: the real file has ~420,000 rows, and a row-by-row
    ``csv`` parse (a list per row) spends seconds in the garbage collector alone."""
    if not path.is_file():
        raise DataError(f"{path}: file not found (EchoNet-Dynamic's LV tracings, columns "
                        f"{', '.join(TRACING_COLUMNS)})")
    lines = path.read_text().splitlines()
    col = _header(path, lines[0].split(",") if lines else [], TRACING_COLUMNS)
    body = [line for line in lines[1:] if line]
    if not body:
        return {}
    k = col["FileName"]
    try:
        nums = np.loadtxt(body, delimiter=",", usecols=[col[c] for c in ("X1", "Y1", "X2", "Y2", "Frame")],
                          dtype=np.float64, ndmin=2)
        names = ([line.partition(",")[0] for line in body] if k == 0 else
                 [line.split(",", k + 1)[k] for line in body])
    except (ValueError, IndexError) as e:
        raise DataError(f"{path}: a row cannot be read ({e}); expected numbers in X1, Y1, X2, Y2 and Frame") from None
    xy, frames = nums[:, :4], nums[:, 4].astype(np.int64)
    if not np.array_equal(frames, nums[:, 4]):
        i = int(np.flatnonzero(frames != nums[:, 4])[0])
        raise DataError(f"{path}: data row {i + 1} ({names[i]}) has Frame {nums[i, 4]}, expected a frame index")
    # a video's rows are consecutive in the real file: group runs of one name (a name may come back later)
    starts = [0] + [i for i in range(1, len(names)) if names[i] != names[i - 1]] + [len(names)]
    runs: dict[str, list[np.ndarray]] = {}
    for a, b in zip(starts[:-1], starts[1:]):
        runs.setdefault(names[a], []).append(np.arange(a, b))
    out: dict[str, dict[int, np.ndarray]] = {}
    for name, parts in runs.items():
        idx = parts[0] if len(parts) == 1 else np.concatenate(parts)
        fr = frames[idx]
        by_frame = {t: xy[idx[fr == t]] for t in dict.fromkeys(fr.tolist())}
        out.setdefault(_stem(name.strip()), {}).update(by_frame)  # "X.avi" and "X" are one video
    return out


_INDEX_CACHE: dict[str, EchoNetIndex] = {}


def read_index(root: Path) -> EchoNetIndex:
    """Parse ``FileList.csv`` and ``VolumeTracings.csv`` under ``root`` (cached while both files are unchanged).
    Raises ``DataError`` naming the file for a missing file, a missing column or an unreadable value."""
    filelist, tracings = root / "FileList.csv", root / "VolumeTracings.csv"
    key = f"{root}|{file_key(filelist) if filelist.exists() else ''}|{file_key(tracings) if tracings.exists() else ''}"
    if key not in _INDEX_CACHE:
        # The parse makes ~10^5 short-lived containers and no cycles: with the collector on, their allocation
        # triggers full collections of the whole heap (torch's modules included), a third of the time.
        gc_was_on = gc.isenabled()
        gc.disable()
        try:
            videos = _read_filelist(filelist)
            traces = _read_tracings(tracings)
        finally:
            if gc_was_on:
                gc.enable()
        known = {v["name"] for v in videos}
        orphans = [n for n in traces if n not in known]
        _INDEX_CACHE.clear()
        _INDEX_CACHE[key] = EchoNetIndex(root, filelist, tracings, videos, traces, orphans)
    return _INDEX_CACHE[key]


def es_ed(traces: dict[int, np.ndarray]) -> tuple[int, int] | None:
    """(ES, ED) frames: the first and the last traced frame in file order; None with fewer than two."""
    frames = list(traces)
    return (frames[0], frames[-1]) if len(frames) >= 2 else None


def video_problem(index: EchoNetIndex, v: dict, es: int, ed: int) -> str | None:
    """Why a video with both traces is unusable (from the CSVs alone), or None."""
    for phase, t in (("ES", es), ("ED", ed)):
        if not 0 <= t < v["num_frames"]:
            return (f"{index.tracings}: {v['name']} {phase} frame {t} is outside 0..{v['num_frames'] - 1} "
                    f"(NumberOfFrames {v['num_frames']} in {index.filelist.name})")
        n = len(index.traces[v["name"]][t])
        if n < 2:  # no outline at all (EchoNet's own loader fills whatever the chords give)
            return (f"{index.tracings}: {v['name']} frame {t} has {n} row, expected a long axis and disk chords")
    return None


# ------------------------------------------------------------------------------------------------ lists

def load_split(part: str) -> list[dict]:
    """Sample metas of ``echonet_dynamic_<part>``: one per traced frame (ES then ED) of each video of that split."""
    name = f"{FAMILY}_{part}"
    root = DatasetRoots.get(FAMILY)
    index = read_index(root)
    if index.orphans:
        more = f" (and {len(index.orphans) - 1} more)" if len(index.orphans) > 1 else ""
        raise DataError(f"{index.tracings}: tracing rows for video {index.orphans[0]}{more}, which is not in "
                        f"{index.filelist}")
    train = part == "train"
    videos_dir = str(root / "Videos")
    samples, skipped = [], 0
    for v in index.videos:
        if v["split"] != SPLITS[part]:
            continue
        traces = index.traces.get(v["name"], {})
        pair = es_ed(traces)
        if pair is None:
            skipped += 1
            continue
        es, ed = pair
        problem = video_problem(index, v, es, ed)
        if problem:
            if not (train and BadData.may_skip()):
                raise DataError(problem)
            logger.warning(f"Skipping a bad training video (data.bad_sample_policy=skip): {problem}")
            BadData.record(str(index.tracings), problem)
            continue
        avi = os.path.join(videos_dir, f"{v['name']}.avi")
        cache = LazyVideo(EchoNetSource(avi, {es: traces[es], ed: traces[ed]}), len(CLASSES),
                          num_frames=v["num_frames"], annotated_frames=sorted({es, ed}))
        for phase, t in (("ES", es), ("ED", ed)):
            samples.append(dict(video_id=v["name"], frame_idx=t, phase=phase, num_frames=v["num_frames"],
                                annotated_frames=sorted({es, ed}), es=es, ed=ed, ef=v["ef"], edv=v["edv"],
                                esv=v["esv"], fps=v["fps"], split=v["split"], video_path=avi,
                                labeled=True, cache=cache))
    if skipped:
        logger.warning(f"{name}: {skipped} video(s) of {index.filelist} with fewer than two traced frames in "
                       f"{index.tracings.name} left out")
    MetadataCatalog.set(name, skipped_videos=skipped)
    if not samples:
        raise DataError(f"{index.filelist}: no {SPLITS[part]} video with two traced frames (dataset {name})")
    for i, s in enumerate(samples):
        s["sample_id"] = i
    return samples


# ------------------------------------------------------------------------------------------------ check

def check(root: Path) -> dict:
    """Scan an EchoNet-Dynamic folder: both CSVs, then every video one at a time (decoded, its frame count and size
    against FileList, its masks rasterised). Groups are the splits; "unlabelled" videos are those with fewer than
    two traced frames (left out of the lists, not a problem). Report shape: ``data_schedule/check_data.py``."""
    root = Path(root)
    groups = {s: new_group() for s in SPLITS.values()}
    problems: list[dict] = []

    def problem(group: str | None, file, reason: str) -> None:
        problems.append({"file": str(file), "reason": reason})
        if group in groups:
            groups[group]["problems"] += 1

    try:
        index = read_index(root)
    except DataError as e:
        problem(None, root, str(e))
        index = None
    if index is not None:
        for name in index.orphans:
            problem(None, index.tracings, f"tracing rows for video {name}, which is not in {index.filelist.name}")
        for v in index.videos:
            g = groups[v["split"]]
            g["videos"] += 1
            traces = index.traces.get(v["name"], {})
            pair = es_ed(traces)
            g["labelled_videos" if pair else "unlabelled_videos"] += 1
            avi = root / "Videos" / f"{v['name']}.avi"
            if pair and (reason := video_problem(index, v, *pair)):
                problem(v["split"], index.tracings, reason)
                pair = None
            try:
                src = EchoNetSource(str(avi), {t: traces[t] for t in pair} if pair else {})
                rec = src.read().validate(len(CLASSES))
            except DataError as e:
                problem(v["split"], avi, str(e).split(f"{avi}: ", 1)[-1])
                continue
            g["frames"] += rec.num_frames
            g["frames_range"] = widen(g["frames_range"], rec.num_frames)
            g["height_range"] = widen(g["height_range"], rec.frame_size[0])
            g["width_range"] = widen(g["width_range"], rec.frame_size[1])
            g["annotated_frames"] += len(rec.labels)
            g["label_values"] |= {int(x) for lab in rec.labels.values() for x in np.unique(lab)}
            if rec.num_frames != v["num_frames"]:
                problem(v["split"], avi, f"{rec.num_frames} frames decoded, NumberOfFrames in "
                                         f"{index.filelist.name} says {v['num_frames']}")
            if pair and any(not rec.labels[t].any() for t in pair):
                problem(v["split"], index.tracings, f"{v['name']}: a traced LV mask is empty")
    return finish_report(root, len(CLASSES), groups, problems, list(groups))


# ------------------------------------------------------------------------------------------------ names

def register_all() -> None:
    """Record the family's root and the three split names; nothing is read until a name is used."""
    if FAMILY not in DatasetRoots.families():
        DatasetRoots.register(FAMILY, _resolve, env="DATASET_PATH", check=check)
    for part in SPLITS:
        name = f"{FAMILY}_{part}"
        if name in DatasetCatalog:
            continue
        DatasetCatalog.register(name, lambda p=part: load_split(p))
        # skipped_videos: None until the list is built, then how many videos had fewer than two traced frames
        MetadataCatalog.set(name, classes=list(CLASSES), colors=list(COLORS), family=FAMILY, split="official",
                            part=part, mode="train" if part == "train" else "evaluate", labeled=True,
                            skipped_videos=None)


register_all()
