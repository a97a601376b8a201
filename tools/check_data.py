#!/usr/bin/env python
"""Check a dataset before training: every file, every problem (CardiacUDC / EchoSynth, CAMUS, EchoNet-Dynamic,
SUN-SEG: any family with a data check registered in ``core.catalog.DatasetRoots``).

    python tools/check_data.py --root $DATASET_PATH                     # CardiacUDC: folder holding cardiacUDC_dataset/
    python tools/check_data.py --root /data/cardiacUDC_dataset          # ... or that folder itself
    python tools/check_data.py --dataset echo_synth --json out.json     # a family's default root
    python tools/check_data.py --family camus --root $DATASET_PATH      # folder holding CAMUS/ (or CAMUS/ itself)
    python tools/check_data.py --dataset echonet_dynamic                # $DATASET_PATH/EchoNet-Dynamic

Prints the family's report (per site / split / view table and one line per problem). Exit code: 0 no problems,
1 problems found (use it to gate a job), 2 usage error. ``main.py --trainer_mode check_data`` checks the datasets
a config names in the same way.
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
CARDIAC = ("cardiac_udc", "echo_synth", "echo_synth_v1")  # the CardiacUDC layout (--sites, --num-classes)


def _usage_error(msg: str) -> int:
    print(f"check_data: {msg}", file=sys.stderr)
    return 2


def _cardiac_root(given: Path, sites) -> Path | str:
    """The ``cardiacUDC_dataset`` folder from ``--root`` (it or its parent), or a usage message."""
    if not given.is_dir():
        return f"dataset root not found: {given}; {HINT}"
    root = given / DATASET_DIRNAME if (given / DATASET_DIRNAME).is_dir() else given
    if not any(p.is_dir() for p in root.glob("Site_*")) and sites is None:
        return f"no {DATASET_DIRNAME}/ or Site_* folders in {given}; {HINT}"
    return root


def _family_root(family: str, given: Path | None) -> Path:
    """The family's dataset folder: its default (``--dataset``), or resolved from ``--root`` given as the base
    folder (``$DATASET_PATH``) or as the dataset folder itself. Raises the resolver's DataError."""
    from core.catalog import DatasetRoots
    from data_schedule.sources.nifti import DataError

    if given is None:
        return Path(DatasetRoots.get(family))
    DatasetRoots.set(family, str(given))
    try:
        return Path(DatasetRoots.get(family))
    except DataError:
        DatasetRoots.set(family, str(given.parent))  # --root named the dataset folder itself
        try:
            found = Path(DatasetRoots.get(family))
        except DataError:
            found = None
        if found is None or found.resolve() != given.resolve():
            DatasetRoots.set(family, str(given))
            raise
        return found


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--root", help="the family's base folder ($DATASET_PATH) or its dataset folder itself "
                                    f"(CardiacUDC: the folder holding {DATASET_DIRNAME}/, or that folder)")
    src.add_argument("--dataset", metavar="FAMILY",
                     help="check FAMILY at its default root (echo_synth: generated on first use; cardiac_udc, "
                          "camus, echonet_dynamic, sunseg: $DATASET_PATH)")
    ap.add_argument("--family", default="cardiac_udc", help="with --root: the dataset family (default cardiac_udc)")
    ap.add_argument("--json", metavar="OUT", help="also write the report as JSON to this file")
    ap.add_argument("--num-classes", type=int, default=4, help="CardiacUDC layout: largest valid label value (4)")
    ap.add_argument("--sites", nargs="+", metavar="SITE", help="CardiacUDC layout: only these site folders")
    args = ap.parse_args(argv)  # argparse exits with 2 on usage errors
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    family = args.dataset or args.family

    if args.root and family in CARDIAC:
        # answered before importing the data package (it imports torch), so usage errors come at once
        root = _cardiac_root(Path(args.root), args.sites)
        if isinstance(root, str):
            return _usage_error(root)
    import data_schedule  # noqa: F401  (the registers record their families' roots and checks)
    from core.catalog import DatasetRoots
    from core.errors import ConfigError
    from core.registry import did_you_mean
    from data_schedule.check_data import format_report, scan_cardiac_udc
    from data_schedule.sources.nifti import DataError

    checked = [f for f in DatasetRoots.families() if DatasetRoots.checker(f) is not None]
    if family not in checked:
        return _usage_error(f"no data check for dataset family {family!r}; {did_you_mean(family, checked)}")
    if family not in CARDIAC and (args.sites or args.num_classes != 4):
        return _usage_error(f"--sites and --num-classes are for the CardiacUDC layout, not {family}")
    try:
        if family in CARDIAC:
            if not args.root:
                root = _family_root(family, None)
            report = scan_cardiac_udc(root, num_classes=args.num_classes, sites=args.sites)
        else:
            report = DatasetRoots.checker(family)(_family_root(family, Path(args.root) if args.root else None))
    except (DataError, ConfigError) as e:
        return _usage_error(str(e))
    print(format_report(report))
    if args.json:
        out = Path(args.json)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=1) + "\n")
    return 1 if report["totals"]["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
