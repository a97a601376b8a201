#!/usr/bin/env python
"""Figure: EchoSynth frames from several sites with their chamber labels, beside a real apical four-chamber clip.

    python tools/plot_echo_synth.py --root datasets --out assets/echo_synth.png

Reads the dataset from disk the way a register does (nibabel, ``(W, H, T)`` -> ``(T, H, W)``), generating it
first if ``<root>/cardiacUDC_dataset`` is missing. Top row: full frames as stored (scanner text, depth ticks,
ECG); bottom row: the same frames after the fan crop, with the labels overlaid. The last column is frame 0 of
the real A4C cine shipped in the pydicom wheel (no labels), to compare appearance.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from data_schedule.curation.fan_crop import fan_bbox  # noqa: E402
from data_schedule.sources.nifti import _load_volume  # noqa: E402
from data_schedule.synthetic.echo_synth import CLASS_NAMES, DATASET_DIRNAME, ensure_echo_synth  # noqa: E402
from data_schedule.synthetic.realism import load_reference_clip  # noqa: E402

COLOURS = {1: (0.95, 0.25, 0.25), 2: (0.25, 0.85, 0.35), 3: (0.3, 0.55, 1.0), 4: (1.0, 0.85, 0.2)}  # LV LA RA RV
DEFAULT_SITES = ("Site_G_100", "Site_G_29", "Site_R_126", "Site_R_52")


def _overlay(grey: np.ndarray, label: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    rgb = np.repeat(grey[..., None].astype(np.float32) / 255.0, 3, axis=2)
    for k, c in COLOURS.items():
        m = label == k
        rgb[m] = (1 - alpha) * rgb[m] + alpha * np.asarray(c, np.float32)
    return np.clip(rgb, 0, 1)


def _real_frame() -> tuple[np.ndarray | None, str]:
    try:
        return load_reference_clip()[0], "real A4C (pydicom ybr_color), no labels"
    except Exception as e:  # pydicom missing, or no JPEG decoder (Pillow)
        return None, f"real clip unavailable:\n{type(e).__name__}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", required=True, help="folder containing (or to contain) cardiacUDC_dataset/")
    ap.add_argument("--out", default="assets/echo_synth.png")
    ap.add_argument("--sites", nargs="*", default=list(DEFAULT_SITES))
    ap.add_argument("--dpi", type=int, default=100)
    args = ap.parse_args(argv)

    data = Path(args.root) / DATASET_DIRNAME
    if not data.exists():
        ensure_echo_synth(args.root)
    manifest = json.loads((data / "echo_synth.json").read_text())
    picks = []
    for site in args.sites:
        vids = [v for v in manifest["videos"] if v["site"] == site and v["label"]]
        if not vids:
            raise SystemExit(f"no labelled video of {site} in {data}")
        v = vids[0]
        t = v["annotated_frames"][len(v["annotated_frames"]) // 2]
        picks.append((v, t))

    real, real_title = _real_frame()
    ncol = len(picks) + 1
    fig, axes = plt.subplots(2, ncol, figsize=(3.1 * ncol, 6.6), layout="constrained")
    for j, (v, t) in enumerate(picks):
        img = _load_volume(data / v["image"], "image")
        lab = _load_volume(data / v["label"], "label")
        y0, y1, x0, x1 = fan_bbox(img[0])
        axes[0, j].imshow(img[t], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        axes[0, j].set_title(f"{v['site']}  {Path(v['image']).name.replace('_image.nii.gz', '')}\n"
                             f"frame {t}/{v['num_frames']}, {v['height']}x{v['width']}", fontsize=8)
        axes[0, j].add_patch(plt.Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, ec="cyan", lw=0.8,
                                           ls="--"))
        axes[1, j].imshow(_overlay(img[t, y0:y1, x0:x1], lab[t, y0:y1, x0:x1]), interpolation="nearest")
        axes[1, j].set_title("fan crop + labels", fontsize=8)
    if real is not None:
        grey = real.mean(axis=2).astype(np.uint8)
        y0, y1, x0, x1 = fan_bbox(real)
        axes[0, -1].imshow(real, interpolation="nearest")
        axes[0, -1].add_patch(plt.Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, ec="cyan", lw=0.8,
                                            ls="--"))
        axes[1, -1].imshow(grey[y0:y1, x0:x1], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        axes[1, -1].set_title("REAL: fan crop (no labels)", fontsize=8)
    else:
        axes[0, -1].text(0.5, 0.5, real_title, ha="center", va="center", fontsize=8)
    axes[0, -1].set_title("REAL: " + real_title.replace("real ", ""), fontsize=8, color="darkred")
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    handles = [Patch(color=COLOURS[k], label=name) for k, name in CLASS_NAMES.items()]
    handles.append(Patch(facecolor="none", edgecolor="cyan", linestyle="--", label="fan-crop box"))
    fig.legend(handles=handles, loc="outside lower center", ncol=len(handles), fontsize=8, frameon=False)
    fig.suptitle(f"EchoSynth {manifest['version']} (synthetic A4C echo, CardiacUDC layout, seed {manifest['seed']})"
                 " vs a real clip", fontsize=10)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=args.dpi, pil_kwargs={"optimize": True})
    print(f"wrote {out} ({out.stat().st_size / 1024:.0f} KB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
