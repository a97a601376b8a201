#!/usr/bin/env python
"""Results table (markdown) from real run directories: FLOPs, params, Dice, mIoU per evaluation dataset.

    python tools/results_table.py output/demo [LABEL=output/other_run ...] [--dataset echo_synth_random_test]
        [--links] [--strict] [--update README.md --marker NAME]

Reads ``<run>/model_info.json`` (written at training start) and ``<run>/eval/<dataset>/metrics.json`` (the
latest evaluation of that run). Nothing is typed in by hand. A run given as ``LABEL=PATH`` is shown as LABEL
(e.g. ``BASIC=output/ablation/basic``), otherwise by its folder name. A run that does not exist or has no
evaluation is shown as a row of "missing" (``--strict``: an error instead). ``--links`` adds links to the run's
log, checkpoint and first prediction video, relative to the updated file's folder (or the current folder).
``--update FILE --marker NAME`` replaces only what stands between ``<!-- results:NAME -->`` and
``<!-- /results:NAME -->`` in FILE (written atomically; anything else in the file is kept).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path

LEGACY_CLASSES = ["LV", "LA", "RA", "RV"]  # metrics.json written before it recorded its class_names (CardiacUDC)
LINK_HEADER = ["log", "checkpoint", "video"]


def class_names(metrics: dict) -> list[str]:
    """The per-class columns of one metrics.json, in the dataset's class order."""
    if "class_names" in metrics:
        return list(metrics["class_names"])
    found = [k[5:] for k in metrics if k.startswith("Dice_")]
    return LEGACY_CLASSES if sorted(found) == sorted(LEGACY_CLASSES) else sorted(found)


EXTRA = {"mHD95": "HD95 (mm)", "mSliceDice": "slice Dice", "EF_MAE": "EF MAE", "EF_corr": "EF r"}  # shown when any evaluation has them


def header(classes: list[str], extra: list[str] = ()) -> list[str]:
    return ["run", "model", "dataset", "GFLOPs/clip", "#params", "mDice", "mIoU", *(f"Dice {c}" for c in classes),
            *(EXTRA[k] for k in extra), "iter", "samples"]



def _parse_run(arg: str) -> tuple[str, Path]:
    label, sep, path = arg.partition("=")
    return (label, Path(path)) if sep and label else (Path(arg).name, Path(arg))


def _link(path: Path | None, base: Path, text: str) -> str:
    if path is None or not path.exists():
        return "missing"
    return f"[{text}]({Path(os.path.relpath(path.resolve(), base.resolve())).as_posix()})"


def rows_for(run: Path, dataset: str | None, label: str | None = None, links_base: Path | None = None,
             classes: list[str] | None = None, extra: list[str] = ()) -> list[list[str]]:
    """Table rows of one run (one per evaluated dataset), with a Dice column per name of ``classes`` (default:
    the dataset's own; a class the dataset lacks is "—"). Raises FileNotFoundError naming what is missing."""
    label = label or run.name
    info_file, eval_dir = run / "model_info.json", run / "eval"
    if not info_file.is_file():
        raise FileNotFoundError(f"{info_file} not found: is {run} a MedVidSeg run directory?")
    info = json.loads(info_file.read_text())
    metric_files = sorted(eval_dir.glob("*/metrics.json"))
    if dataset:
        metric_files = [f for f in metric_files if f.parent.name == dataset]
    if not metric_files:
        raise FileNotFoundError(f"No evaluation results under {eval_dir}" + (f" for {dataset}" if dataset else ""))
    gf = info.get("gflops_per_clip")
    out = []
    for f in metric_files:
        m = json.loads(f.read_text())
        row = [label, info["model"], f.parent.name, "n/a" if gf is None else f"{gf:.2f}",
               f"{info['params'] / 1e6:.2f} M", _num(m.get("mDice")), _num(m.get("mIoU")),
               *(_num(m.get(f"Dice_{c}")) for c in (classes or class_names(m))), *(_num(m.get(k)) for k in extra),
               str(m.get("iteration", "")), str(m["num_samples"])]
        if links_base is not None:
            ckpt = next((p for p in (run / "checkpoints" / "model_final.pth", run / "checkpoints" / "model_best.pth")
                         if p.exists()), None)
            video = next(iter(sorted((f.parent / "vis").glob("*.mp4"))), None)
            row += [_link(run / "log.txt", links_base, "log"), _link(ckpt, links_base, "ckpt"),
                    _link(video, links_base, "mp4")]
        out.append(row)
    return out


def _num(v) -> str:
    return "—" if v is None else f"{v:.4f}"


def _columns_of(runs: list[str], dataset: str | None) -> tuple[list[str], list[str]]:
    """Union of the class columns of every evaluation in ``runs`` (first-seen order), and the EXTRA metrics any
    of them has."""
    seen: dict[str, None] = {}
    extra: set[str] = set()
    for arg in runs:
        _, run = _parse_run(arg)
        for f in sorted((run / "eval").glob("*/metrics.json")):
            if dataset is None or f.parent.name == dataset:
                m = json.loads(f.read_text())
                seen.update(dict.fromkeys(class_names(m)))
                extra |= {k for k in EXTRA if m.get(k) is not None}
    return list(seen) or LEGACY_CLASSES, [k for k in EXTRA if k in extra]


def table(runs: list[str], dataset: str | None = None, links_base: Path | None = None, strict: bool = False
          ) -> str:
    classes, extra = _columns_of(runs, dataset)
    head = header(classes, extra) + (LINK_HEADER if links_base is not None else [])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for arg in runs:
        label, run = _parse_run(arg)
        try:
            rows = rows_for(run, dataset, label, links_base, classes, extra)
        except FileNotFoundError as e:
            if strict:
                raise
            print(f"warning: {e}; shown as missing", file=sys.stderr)
            rows = [[label] + ["missing"] * (len(head) - 1)]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def update_between_markers(path: Path, marker: str, text: str) -> None:
    """Replace the block between ``<!-- results:marker -->`` and ``<!-- /results:marker -->`` in ``path``."""
    src = path.read_text()
    begin, end = f"<!-- results:{marker} -->", f"<!-- /results:{marker} -->"
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
    if len(pattern.findall(src)) != 1:
        raise ValueError(f"{path}: expected exactly one '{begin}' ... '{end}' block")
    new = pattern.sub(lambda _: f"{begin}\n{text}\n{end}", src)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(new)
    os.replace(tmp, path)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", help="run directories, or LABEL=run_directory")
    p.add_argument("--dataset", help="only this evaluation dataset")
    p.add_argument("--links", action="store_true", help="add log / checkpoint / video links")
    p.add_argument("--strict", action="store_true", help="a missing run or evaluation is an error")
    p.add_argument("--update", type=Path, help="Markdown file whose marked block to replace (with --marker)")
    p.add_argument("--marker", help="NAME of the <!-- results:NAME --> block")
    args = p.parse_args(argv)
    if bool(args.update) != bool(args.marker):
        print("error: --update and --marker go together", file=sys.stderr)
        return 1
    base = (args.update.parent if args.update else Path.cwd()) if args.links else None
    try:
        text = table(args.runs, args.dataset, base, args.strict)
        if args.update:
            update_between_markers(args.update, args.marker, text)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
