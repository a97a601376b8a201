#!/usr/bin/env python
"""How long does building the EchoNet-Dynamic sample lists take at the real dataset's size (no video decoded)?

    python benchmarks/echonet_index.py [--rows 10000] [--repeats 3]

Writes a FileList.csv of ``--rows`` videos and a matching VolumeTracings.csv (two traced frames per video, 21 rows
each: ~42 rows per video, as the real file) with ``write_echonet_filelist_only`` into a temporary
``EchoNet-Dynamic`` folder (no Videos/: nothing is decoded, nothing is opened), then times, from cold (the parsed
index dropped each time):

- train: ``DatasetCatalog.get("echonet_dynamic_train")`` (both CSVs parsed, the TRAIN metas built);
- all: train, val and test one after the other (the index is parsed once and shared).

Prints the best and the median of ``--repeats`` runs. The register's budget is < 2 s for a 10,000-row FileList.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    ap.add_argument("--rows", type=int, default=10000)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)

    from core.catalog import DatasetCatalog, DatasetRoots
    from data_schedule.registers import echonet_dynamic as reg  # (registers the names)
    from data_schedule.synthetic.raw_fixtures import write_echonet_filelist_only

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / reg.FOLDER
        info = write_echonet_filelist_only(folder / "FileList.csv", rows=args.rows,
                                           tracings=folder / "VolumeTracings.csv")
        DatasetRoots.set(reg.FAMILY, tmp)
        times: dict[str, list[float]] = {"train": [], "all": []}
        sizes = {}
        for _ in range(args.repeats):
            for what, parts in (("train", ["train"]), ("all", ["train", "val", "test"])):
                reg._INDEX_CACHE.clear()
                DatasetCatalog.clear_cache()
                t0 = time.perf_counter()
                for p in parts:
                    sizes[p] = len(DatasetCatalog.get(f"{reg.FAMILY}_{p}"))
                times[what].append(time.perf_counter() - t0)
        DatasetRoots.set(reg.FAMILY, None)

    print(f"EchoNet-Dynamic index: {info['rows']} FileList rows, {info['tracing_rows']} tracing rows; samples "
          + ", ".join(f"{p} {n}" for p, n in sizes.items()))
    print("| lists built | best (s) | median (s) |")
    print("|---|---:|---:|")
    for what, ts in times.items():
        print(f"| {what} | {min(ts):.3f} | {statistics.median(ts):.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
