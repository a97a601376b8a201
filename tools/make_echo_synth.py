#!/usr/bin/env python
"""Generate EchoSynth, the embedded synthetic echocardiography dataset, in CardiacUDC's on-disk layout.

    python tools/make_echo_synth.py --root datasets                 # -> datasets/cardiacUDC_dataset
    python tools/make_echo_synth.py --root /tmp/x --seed 1 --videos-per-site 4 --set size_scale=0.5 frames=(20,30)
    python tools/make_echo_synth.py --root datasets/echo_synth_v1 --preset v1       # the v1 image model

``--set key=value`` overrides any generator parameter (see ``data_schedule/synthetic/echo_synth.py``); values
are Python literals. An existing dataset is never replaced unless ``--overwrite`` is given.
"""
from __future__ import annotations

import argparse
import ast
import json
import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data_schedule.synthetic.echo_synth import DEFAULT_PRESET, PRESETS, generate_echo_synth  # noqa: E402


def _parse_set(items: list[str]) -> dict:
    out = {}
    for item in items:
        if "=" not in item:
            raise SystemExit(f"--set expects key=value, got {item!r}")
        key, value = item.split("=", 1)
        try:
            out[key.strip()] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out[key.strip()] = value  # plain string
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", required=True, help="folder that will contain cardiacUDC_dataset/")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--videos-per-site", type=int, default=8)
    ap.add_argument("--overwrite", action="store_true", help="replace an existing dataset (atomically)")
    ap.add_argument("--preset", default=DEFAULT_PRESET, choices=PRESETS,
                    help="image model: v2 (default, calibrated to a real clip) or v1 (the pre-v2 default)")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="generator parameter overrides")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    overrides = _parse_set(args.set)
    t0 = time.perf_counter()
    try:
        out = generate_echo_synth(args.root, seed=args.seed, videos_per_site=args.videos_per_site,
                                  overwrite=args.overwrite, preset=args.preset, **overrides)
    except FileExistsError as e:
        print(e, file=sys.stderr)
        return 1
    manifest = json.loads((out / "echo_synth.json").read_text())
    videos = manifest["videos"]
    labelled = [v for v in videos if v["label"]]
    frames = [v["num_frames"] for v in videos]
    print(f"EchoSynth {manifest['version']} (preset {manifest['preset']}) seed={args.seed}: {len(videos)} videos "
          f"({len(labelled)} labelled, {len(videos) - len(labelled)} unlabelled) in {out}")
    print(f"  frames/video {min(frames)}-{max(frames)} (mean {sum(frames) / len(frames):.1f}), annotated frames "
          f"{sum(len(v['annotated_frames']) for v in labelled)} in total")
    for site in dict.fromkeys(v["site"] for v in videos):
        vs = [v for v in videos if v["site"] == site]
        print(f"  {site:11s} {len(vs)} videos, {vs[0]['height']}x{vs[0]['width']} (HxW), "
              f"{sum(1 for v in vs if v['label'])} labelled")
    print(f"  done in {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
