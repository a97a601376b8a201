#!/usr/bin/env python
"""Check a CardiacUDC-layout dataset (real or EchoSynth) before training: every file, every problem.

    python tools/check_data.py --root $DATASET_PATH                 # folder holding cardiacUDC_dataset/ ...
    python tools/check_data.py --root /data/cardiacUDC_dataset      # ... or that folder itself
    python tools/check_data.py --dataset echo_synth --json out.json # the framework's default roots

Prints a per-site table (videos, frames, annotated frames, unlabelled videos, sizes, label values) and one line
per problem. Exit code: 0 no problems, 1 problems found (use it to gate a job), 2 usage error.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DATASET_DIRNAME = "cardiacUDC_dataset"
HINT = "set DATASET_PATH or use --dataset echo_synth"


def _usage_error(msg: str) -> int:
    print(f"check_data: {msg}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--root", help=f"folder holding {DATASET_DIRNAME}/, or that folder itself")
    src.add_argument("--dataset", choices=["echo_synth", "cardiac_udc"],
                     help="use the framework's default root (echo_synth: generated on first use; "
                          "cardiac_udc: $DATASET_PATH)")
    ap.add_argument("--json", metavar="OUT", help="also write the report as JSON to this file")
    ap.add_argument("--num-classes", type=int, default=4, help="largest valid label value (default 4)")
    ap.add_argument("--sites", nargs="+", metavar="SITE", help="only these site folders (default: all)")
    args = ap.parse_args(argv)  # argparse exits with 2 on usage errors
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    if args.dataset:
        import data_schedule  # noqa: F401  (the registers record their families' roots)
        from core.catalog import DatasetRoots
        from data_schedule.sources.nifti import DataError

        try:
            root = Path(DatasetRoots.get(args.dataset))
        except DataError as e:
            return _usage_error(str(e))
    else:
        given = Path(args.root)
        if not given.is_dir():
            return _usage_error(f"dataset root not found: {given}; {HINT}")
        root = given / DATASET_DIRNAME if (given / DATASET_DIRNAME).is_dir() else given
        if not any(p.is_dir() for p in root.glob("Site_*")) and args.sites is None:
            return _usage_error(f"no {DATASET_DIRNAME}/ or Site_* folders in {given}; {HINT}")

    # Imported here so that usage errors answer at once (the data_schedule package imports torch).
    from data_schedule.check_data import format_report, scan_cardiac_udc

    report = scan_cardiac_udc(root, num_classes=args.num_classes, sites=args.sites)
    print(format_report(report))
    if args.json:
        out = Path(args.json)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=1) + "\n")
    return 1 if report["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
