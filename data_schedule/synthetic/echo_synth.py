"""EchoSynth: synthetic apical four-chamber echocardiography in CardiacUDC's exact on-disk layout.

The framework's embedded default dataset. It lets every config, test and tutorial run end to end without the
real CardiacUDC download, through exactly the code path the real data takes (same folders, file names, NIfTI
axis order, dtypes, sparse labels, unannotated videos, burned-in scanner overlays to crop away).

Layout written by :func:`generate_echo_synth` (see REFERENCE 1.1)::

    <root>/cardiacUDC_dataset/
        echo_synth.json                                  generator version, seed, parameters, per-video facts
        Site_G_100/patient{N}-4_image.nii.gz             no dash after "patient" in this site
        Site_G_100/patient{N}-4_label.nii.gz             (one video of this site has no label file)
        Site_G_20/patient-{N}-4_image.nii.gz, patient-{N}-4_label.nii.gz
        Site_G_29/..., Site_R_126/..., Site_R_52/...      same pattern as Site_G_20
        Site_R_73/patient-{N}-4_image.nii.gz              image files only (unannotated videos)

Arrays are generated as ``(T, H, W)`` and written as ``arr.transpose(2, 1, 0)`` so that nibabel reads them as
``(W, H, T)`` and SimpleITK as ``(T, H, W)``, like the real release. Images are ``uint8``, labels ``int8`` with
0 background, 1 LV, 2 LA, 3 RA, 4 RV. In a labelled video only a few frames are annotated (5-7 by default,
spread over the video, avoiding the first and last 5 frames when the video is long enough); every other label
frame is exactly zero. Every annotated frame contains all four chambers. Patient numbers are increasing but
non-contiguous and do not start at 1, like the real data.

Presets: ``preset="v2"`` (the default, :mod:`.echo_synth_v2`: calibrated to a real A4C clip, with wall dropout,
clutter, septal gaps, rib shadows, varied anatomy and annotator jitter; datasets ``echo_synth_*``) and
``preset="v1"`` (the image model below, unchanged bit for bit since 1.0.0, so tables made on it can be
regenerated; datasets ``echo_synth_v1_*``, root ``datasets/echo_synth_v1``). ``echo_synth.json`` records the
preset; :func:`ensure_echo_synth` refuses a folder of the other preset instead of mixing or replacing it.

v1 image model (all per video unless said; ``R`` = sector radius in pixels, geometry is in units of ``R``)
----------------------------------------------------------------------------------------------------------
* Sector: a fan with its apex at the top centre (probe), radius ``R``, half-angle ``sector_half_angle_deg``;
  exactly 0 outside the fan. Image rows below the fan hold the ECG strip.
* Anatomy (apical four-chamber, "heart coordinates" centred on the crux): LV on the image right with its apex
  near the probe, RV on the image left, LA below the LV, RA below the RV. Chamber cavities are ellipses (egg
  shaped for the ventricles: LV bullet, RV more triangular) clipped by the interventricular/interatrial septum planes and by the mitral/tricuspid valve planes (the
  tricuspid plane sits slightly more apical), so cavities are disjoint by construction; a smooth random
  displacement (``boundary_irregularity``) roughens all outlines. Myocardium is a bullet shaped envelope
  around both ventricles plus a wall band around each cavity; thin atrial walls (``atrial_wall_echo``); a
  pericardium band, brightest behind the atria; mitral and tricuspid leaflets that close in systole and open into the ventricles in
  diastole; bright annulus points. Labels are exactly the cavity regions (clipped to the fan); walls, septum,
  valve planes are background; the thin leaflets, lying inside the ventricular cavity, are labelled as the
  ventricle (like manual annotations that follow the annulus line).
* Cardiac cycle: heart rate drawn from ``heart_rate_bpm`` and phase uniform per video, frame rate per site.
  During systole the ventricles narrow (``ejection``) and the valve planes move towards the apex
  (``av_plane_motion``) while the atria grow (``atrial_filling``); diastole reverses it.
* Probe motion: smooth global rotation about the probe (``probe_rotation_deg``) and translation
  (``probe_shift``, in units of R) over time; the fan and overlays stay fixed, the anatomy (and labels) move.
* Echogenicity: blood ``blood_echo`` with patchy smoke-like echoes (``blood_clutter``), myocardium
  ``myocardium_echo`` (dimmer where walls run along the beams at the sector sides: ``lateral_wall_dimming``),
  surrounding tissue ``tissue_echo`` with a smooth random texture, pericardium ``pericardium_echo``, valves
  ``valve_echo``; near-field haze (``near_field_haze``) and a reverberation arc across the apex
  (``apical_clutter``); softened by a point-spread blur (``psf_blur_px``); depth attenuation
  ``exp(-attenuation * depth)`` times an under-gained near field (like a real TGC setting).
* Speckle: multiplicative, Rayleigh-distributed envelope of a complex Gaussian field generated on the
  scan-line (polar) grid, smoothed with an anisotropic Gaussian (``speckle_axial_px`` along the beam,
  ``speckle_lateral_deg`` across it, so speckle grows laterally with depth like a real sector scan) and scan
  converted to the image; temporally correlated by an AR(1) mix of fields (``speckle_rho``).
* Display: log compression (``dynamic_range_db``; ``white_db`` above the myocardium level is white, shifted
  by the site's ``gain_db`` and a per-video ``gain_jitter_db``), a small noise floor inside the fan
  (``noise_floor``, which keeps the sector above grey 10 for the fan crop) and additive Gaussian noise
  (``noise_std``).
* Dropout/shadowing: with probability ``dropout_prob`` a frame gets an angular shadow (``dropout_strength``,
  half-width drawn from ``dropout_width_deg``)
  from some depth onwards, hiding part of a wall in that single frame (temporal context helps).
* Overlays (``overlays``, ``ecg``): scanner text in the left and right margins, depth ticks, an orientation
  marker, and an ECG trace (sweeping, in sync with the cardiac cycle) below the fan. They are kept at least
  3 pixels away from the fan (so the largest-connected-component fan crop isolates the fan), lie outside the
  fan's bounding box (except the small orientation marker), and are bright (``text_grey`` >= 100), so a naive bounding box of
  all non-zero pixels includes them.
* Site styles (:data:`SITE_STYLES`): image size, frame rate, sector angle, gain, dynamic range, speckle size,
  noise, attenuation, blur and overlay text differ per site, like different devices.

Every parameter can be overridden: ``generate_echo_synth(root, height=96)`` sets a site-style key for all
sites, ``frames=(12, 16)`` sets a global key, ``size_scale=0.5`` scales all sites' image sizes (fast tests) and
``site_styles={"Site_G_20": {"gain_db": 2}}`` changes one site. Unknown keys raise ``TypeError``.

Determinism: each video uses ``numpy.random.default_rng([seed, site_index, video_index])``, so the same seed
and parameters give identical arrays regardless of generation order or worker count.
"""
from __future__ import annotations

import copy
import difflib
import json
import logging
import math
import os
import shutil
import socket
import time
import uuid
from pathlib import Path
from typing import Any, Iterable, Mapping

import cv2
import numpy as np

__all__ = [
    "GENERATOR_VERSION",
    "GENERATOR_VERSIONS",
    "PRESETS",
    "DEFAULT_PRESET",
    "preset_of_manifest",
    "DATASET_DIRNAME",
    "SITE_NAMES",
    "UNLABELED_SITES",
    "CLASS_NAMES",
    "DEFAULT_PARAMS",
    "SITE_STYLES",
    "resolve_params",
    "sector_geometry",
    "video_file_names",
    "render_video",
    "generate_echo_synth",
    "ensure_echo_synth",
]

logger = logging.getLogger(__name__)

#: image models: "v2" (default, echo_synth_v2.py) and "v1" (this module's render_video_v1, kept so tables made
#: on it can be regenerated; datasets echo_synth_v1_*)
PRESETS: tuple[str, ...] = ("v2", "v1")
DEFAULT_PRESET = "v2"
GENERATOR_VERSIONS: dict[str, str] = {"v1": "1.0.0", "v2": "2.0.0"}
GENERATOR_VERSION = GENERATOR_VERSIONS[DEFAULT_PRESET]
DATASET_DIRNAME = "cardiacUDC_dataset"
SITE_NAMES: tuple[str, ...] = ("Site_G_100", "Site_G_20", "Site_G_29", "Site_R_126", "Site_R_52", "Site_R_73")
UNLABELED_SITES: tuple[str, ...] = ("Site_R_73",)
#: label value -> chamber name (0 is background)
CLASS_NAMES: dict[int, str] = {1: "LV", 2: "LA", 3: "RA", 4: "RV"}
_TMP_PREFIX = f".{DATASET_DIRNAME}.tmp-"

#: Global parameters of the v1 preset (same for every site). Ranges are (low, high) drawn uniformly per video.
#: v2's are ``echo_synth_v2.DEFAULT_PARAMS_V2``.
DEFAULT_PARAMS: dict[str, Any] = {
    "frames": (40, 80),  # frames per video, inclusive range
    "annotated_frames": (5, 7),  # annotated frames per labelled video, inclusive range
    "annotation_margin": 5,  # keep annotated frames away from the first/last frames when the video allows it
    "unlabeled_in_first_site": 1,  # videos of Site_G_100 written without a label file (kept >= 1 labelled)
    "heart_rate_bpm": (55.0, 110.0),
    "heart_scale": (0.92, 1.06),  # overall chamber size factor
    "heart_tilt_deg": 7.0,  # max |tilt| of the long axis
    "ejection": 0.26,  # fractional narrowing of the ventricles at end systole
    "av_plane_motion": 0.06,  # valve-plane excursion towards the apex at end systole (units of R)
    "atrial_filling": 0.13,  # fractional growth of the atria at end systole
    "probe_rotation_deg": 2.0,  # amplitude of the probe's rotation jitter
    "probe_shift": 0.02,  # amplitude of the probe's translation jitter (units of R)
    "boundary_irregularity": 0.012,  # smooth random displacement of chamber outlines (units of R)
    "blood_echo": 0.008,
    "tissue_echo": 0.09,
    "myocardium_echo": 1.0,
    "atrial_wall_echo": 0.3,
    "pericardium_echo": 3.0,
    "valve_echo": 0.7,
    "near_field_haze": 0.05,
    "apical_clutter": 0.05,  # reverberation haze across the apex (a faint arc at a random depth)
    "blood_clutter": 1.0,  # patchy smoke-like echoes inside the blood pools (0 = clean black cavities)
    "lateral_wall_dimming": 0.55,  # walls along the beam (sector sides) lose this fraction of their echo
    "gain_jitter_db": 3.0,  # per-video random gain offset (operator setting)
    "white_db": 17.0,  # echo level (dB above myocardium) displayed as white, before the site's gain
    "speckle_rho": 0.8,  # AR(1) temporal correlation of the speckle field between frames
    "noise_floor": 16.0,  # grey level of the noise floor inside the fan
    "dropout_prob": 0.15,  # probability that a frame gets a shadow/dropout wedge
    "dropout_strength": 0.9,  # fraction of echo removed inside the wedge
    "dropout_width_deg": (3.0, 8.0),  # half-width range of the wedge (degrees)
    "overlays": True,  # scanner text, depth ticks, orientation marker
    "ecg": True,  # ECG strip below the fan
}

#: Per-site "device" styles of v1 (v2: ``echo_synth_v2.SITE_STYLES_V2``). ``height``/``width`` in pixels, angles
#: in degrees.
SITE_STYLES: dict[str, dict[str, Any]] = {
    "Site_G_100": dict(height=200, width=244, fps=30.0, sector_half_angle_deg=37.0, gain_db=0.0,
                       dynamic_range_db=42.0, speckle_axial_px=1.3, speckle_lateral_deg=1.3, noise_std=3.0,
                       attenuation=0.6, psf_blur_px=1.0, device="VIVID", text_grey=200),
    "Site_G_20": dict(height=192, width=236, fps=36.0, sector_half_angle_deg=35.0, gain_db=2.0,
                      dynamic_range_db=48.0, speckle_axial_px=1.5, speckle_lateral_deg=1.5, noise_std=4.0,
                      attenuation=0.8, psf_blur_px=1.2, device="VIVID", text_grey=185),
    "Site_G_29": dict(height=208, width=252, fps=30.0, sector_half_angle_deg=38.0, gain_db=-2.0,
                      dynamic_range_db=40.0, speckle_axial_px=1.1, speckle_lateral_deg=1.1, noise_std=2.5,
                      attenuation=0.5, psf_blur_px=0.9, device="LOGIQ", text_grey=210),
    "Site_R_126": dict(height=204, width=240, fps=45.0, sector_half_angle_deg=34.0, gain_db=1.0,
                       dynamic_range_db=45.0, speckle_axial_px=1.7, speckle_lateral_deg=1.8, noise_std=5.0,
                       attenuation=0.9, psf_blur_px=1.4, device="EPIQ", text_grey=170),
    "Site_R_52": dict(height=196, width=248, fps=40.0, sector_half_angle_deg=36.0, gain_db=-1.0,
                      dynamic_range_db=50.0, speckle_axial_px=1.4, speckle_lateral_deg=1.4, noise_std=3.5,
                      attenuation=0.7, psf_blur_px=1.1, device="iE33", text_grey=190),
    "Site_R_73": dict(height=200, width=240, fps=33.0, sector_half_angle_deg=36.0, gain_db=3.0,
                      dynamic_range_db=44.0, speckle_axial_px=1.6, speckle_lateral_deg=1.6, noise_std=4.5,
                      attenuation=0.75, psf_blur_px=1.3, device="CX50", text_grey=180),
}


# ----------------------------------------------------------------------------------------------------------
# parameters and names
# ----------------------------------------------------------------------------------------------------------
def _unknown_key(key: str, known: Iterable[str]) -> TypeError:
    hits = difflib.get_close_matches(key, list(known), n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(repr(h) for h in hits)}?" if hits else ""
    return TypeError(f"unknown EchoSynth parameter {key!r}{hint}")


def _preset_defaults(preset: str) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    if preset == "v1":
        return DEFAULT_PARAMS, SITE_STYLES
    if preset == "v2":
        from data_schedule.synthetic import echo_synth_v2  # imports this module: loaded on first use

        return echo_synth_v2.DEFAULT_PARAMS_V2, echo_synth_v2.SITE_STYLES_V2
    hits = difflib.get_close_matches(str(preset), PRESETS, n=1, cutoff=0.0)
    raise ValueError(f"unknown EchoSynth preset {preset!r}; expected one of {list(PRESETS)}"
                     + (f" (did you mean {hits[0]!r}?)" if hits else ""))


def resolve_params(preset: str = DEFAULT_PRESET, **overrides: Any
                   ) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """Merge overrides into the defaults of ``preset``; returns ``(global_params, {site: style})``.

    A key of the preset's global parameters (:data:`DEFAULT_PARAMS` for v1, ``DEFAULT_PARAMS_V2`` for v2)
    overrides the global value, a site-style key (e.g. ``height``) is set for every site, ``size_scale``
    multiplies every site's height and width, and ``site_styles`` maps a site name to a dict of per-site style
    overrides. Anything else raises ``TypeError`` naming the closest valid keys. ``params["preset"]`` records
    the preset, so :func:`render_video` knows which image model to run.
    """
    defaults, site_styles = _preset_defaults(preset)
    params = copy.deepcopy(defaults)
    styles = copy.deepcopy(site_styles)
    style_keys = set(next(iter(SITE_STYLES.values())))
    size_scale = float(overrides.pop("size_scale", 1.0))
    per_site = overrides.pop("site_styles", None) or {}
    for key, value in overrides.items():
        if key in params:
            params[key] = value
        elif key in style_keys:
            for st in styles.values():
                st[key] = value
        else:
            raise _unknown_key(key, list(params) + sorted(style_keys) + ["size_scale", "site_styles"])
    for site, st_over in per_site.items():
        if site not in styles:
            raise _unknown_key(site, SITE_NAMES)
        for key, value in st_over.items():
            if key not in style_keys:
                raise _unknown_key(key, style_keys)
            styles[site][key] = value
    if size_scale <= 0:
        raise ValueError(f"size_scale must be > 0, got {size_scale}")
    for st in styles.values():
        st["height"] = max(48, int(round(st["height"] * size_scale)))
        st["width"] = max(56, int(round(st["width"] * size_scale)))
    lo, hi = params["frames"]
    if not (1 <= lo <= hi):
        raise ValueError(f"frames must be an inclusive range (low, high) with 1 <= low <= high, got {(lo, hi)}")
    alo, ahi = params["annotated_frames"]
    if not (1 <= alo <= ahi <= lo):
        raise ValueError(f"annotated_frames {(alo, ahi)} must satisfy 1 <= low <= high <= min frames ({lo})")
    params["preset"] = preset
    return params, styles


def video_file_names(site: str, patient: int) -> tuple[str, str]:
    """``(image_file, label_file)`` names of a video, following the real release's per-site patterns."""
    stem = f"patient{patient}-4" if site == "Site_G_100" else f"patient-{patient}-4"
    return f"{stem}_image.nii.gz", f"{stem}_label.nii.gz"


def _patient_numbers(seed: int, site_index: int, n: int) -> list[int]:
    rng = np.random.default_rng([seed, site_index, 1_000_003])
    start = int(rng.integers(2, 60))
    steps = rng.integers(1, 5, size=n)  # gaps of 0-3 missing numbers
    return [start + int(s) for s in np.cumsum(steps) - steps[0]]


def _choose_annotated(rng: np.random.Generator, num_frames: int, count: int, margin: int) -> list[int]:
    """``count`` distinct frames spread over the video (stratified), avoiding ``margin`` frames at both ends
    when the video is long enough."""
    lo, hi = margin, num_frames - 1 - margin
    if hi - lo + 1 < count:
        lo, hi = 0, num_frames - 1
    edges = np.linspace(lo, hi + 1, count + 1)
    frames = []
    for k in range(count):
        a, b = int(math.ceil(edges[k])), int(math.ceil(edges[k + 1])) - 1
        frames.append(int(rng.integers(a, max(a, b) + 1)))
    frames = sorted(set(frames))
    return frames


# ----------------------------------------------------------------------------------------------------------
# rendering
# ----------------------------------------------------------------------------------------------------------
def _ellipse2(hx: np.ndarray, hy: np.ndarray, cx: float, cy: float, a: float, b: float, egg: float = 0.0
              ) -> np.ndarray:
    """Squared elliptic radius of points ``(hx, hy)`` (< 1 inside). ``egg`` > 0 widens the shape towards +hy
    and narrows it towards -hy (a bullet/egg, apex up)."""
    v = (hy - cy) * (1.0 / b)
    if egg:
        u = (hx - cx) / (a * (1.0 + egg * np.clip(v, -1.0, 1.0)))
    else:
        u = (hx - cx) * (1.0 / a)
    return u * u + v * v


def _seg_dist2(hx: np.ndarray, hy: np.ndarray, x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    """Squared distance from points to the segment (x0, y0)-(x1, y1)."""
    dx, dy = x1 - x0, y1 - y0
    t = np.clip(((hx - x0) * dx + (hy - y0) * dy) * (1.0 / (dx * dx + dy * dy + 1e-12)), 0.0, 1.0)
    ex, ey = hx - (x0 + t * dx), hy - (y0 + t * dy)
    return ex * ex + ey * ey


def _cycle(tau: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Contraction ``s`` in [0, 1] (1 = end systole) and atrioventricular valve opening in [0, 1] over the
    cycle phase ``tau`` in [0, 1) (0 = R wave, end diastole)."""
    s = np.interp(tau, [0.0, 0.05, 0.30, 0.38, 0.55, 0.80, 0.90, 1.0], [0.0, 0.04, 0.95, 1.0, 0.3, 0.2, 0.05, 0.0])
    opening = np.interp(tau, [0.0, 0.40, 0.45, 0.55, 0.70, 0.82, 0.88, 0.96, 1.0],
                        [0.0, 0.0, 1.0, 0.9, 0.45, 0.45, 0.8, 0.0, 0.0])
    return s, opening


def _ecg(tau: np.ndarray) -> np.ndarray:
    """A P-QRS-T waveform over the cycle phase (R peak at 0), peak amplitude ~1."""
    t = (tau + 0.5) % 1.0 - 0.5

    def g(c: float, w: float, a: float) -> np.ndarray:
        return a * np.exp(-0.5 * ((t - c) / w) ** 2)

    return g(-0.17, 0.025, 0.12) + g(-0.025, 0.008, -0.12) + g(0.0, 0.009, 1.0) + g(0.025, 0.008, -0.22) + g(
        0.28, 0.045, 0.28)


class _Geometry:
    """Fan geometry of one site: fan mask, fan box, polar coordinates inside the box, scan conversion maps."""

    R0_FRAC = 0.06  # the sector starts at this radius (rounded probe footprint at the top)

    def __init__(self, style: Mapping[str, Any]):
        H, W = int(style["height"]), int(style["width"])
        self.H, self.W = H, W
        half = math.radians(float(style["sector_half_angle_deg"]))
        self.half = half
        self.margin = max(10, int(round(0.125 * W)))  # side margins for text
        self.ecg_band = max(12, int(round(0.11 * H)))
        self.top = max(2, int(round(0.02 * H)))
        r0 = self.R0_FRAC
        # sector radius: fit the height above the ECG strip and the width inside the text margins
        R_h = (H - self.top - self.ecg_band - 3) / (1.0 - r0 * math.cos(half))
        R_w = (W / 2.0 - self.margin) / math.sin(half)
        self.R = R = float(min(R_h, R_w))
        self.cx = (W - 1) / 2.0
        self.ay = self.top - r0 * R * math.cos(half)  # virtual apex (above the first row)
        yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
        px, py = (xx - self.cx) / R, (yy - self.ay) / R
        r, theta = np.hypot(px, py), np.arctan2(px, py)
        fan = (r >= r0) & (r <= 1.0) & (np.abs(theta) <= half)
        self.fan = fan
        ys, xs = np.nonzero(fan)
        self.fan_box = (int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1)
        y0, y1, x0, x1 = self.fan_box
        self.box = (slice(y0, y1), slice(x0, x1))
        self.px, self.py = px[self.box], py[self.box]
        self.r, self.theta = r[self.box], theta[self.box]
        self.fan_in_box = fan[self.box]
        # polar (scan-line) grid for speckle: ~1 sample per pixel along the beam, a beam every 0.35 degrees
        self.beam_deg = 0.35
        self.n_r = max(16, int(round(R * (1 - r0))))
        self.n_b = max(16, int(round(2 * math.degrees(half) / self.beam_deg)))
        self.map_r = ((self.r - r0) / (1 - r0) * (self.n_r - 1)).astype(np.float32)
        self.map_b = ((self.theta + half) / (2 * half) * (self.n_b - 1)).astype(np.float32)


def sector_geometry(site: str, **overrides: Any) -> dict[str, Any]:
    """The scan sector of ``site`` under ``overrides``: ``{"mask": H×W bool, "fan_box": (y0, y1, x0, x1),
    "radius": R (pixels), "apex": (y, x) (virtual, may lie above the image), "half_angle_deg": ...}``."""
    _, styles = resolve_params(**overrides)
    if site not in styles:
        raise _unknown_key(site, SITE_NAMES)
    geo = _Geometry(styles[site])
    return dict(mask=geo.fan.copy(), fan_box=geo.fan_box, radius=geo.R, apex=(geo.ay, geo.cx),
                half_angle_deg=math.degrees(geo.half))


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], coarse: tuple[int, int]) -> np.ndarray:
    """A smooth random field of roughly unit scale, made by upsampling coarse Gaussian noise (bicubic)."""
    c = rng.standard_normal(coarse).astype(np.float32)
    return np.clip(cv2.resize(c, (shape[1], shape[0]), interpolation=cv2.INTER_CUBIC), -2.5, 2.5) / 1.5


def _overlay_layer(geo: _Geometry, style: Mapping[str, Any], params: Mapping[str, Any], info: Mapping[str, Any],
                   rng: np.random.Generator, depth_cm: int | None = None) -> np.ndarray:
    """Static burned-in overlay of one video (text, depth ticks, orientation marker), uint8 H×W. The imaging
    depth shown is ``depth_cm``, or drawn from ``rng`` (14-18 cm) when None (v1)."""
    H, W = geo.H, geo.W
    layer = np.zeros((H, W), np.uint8)
    if not params["overlays"]:
        return layer
    grey = int(style["text_grey"])
    y0, y1, x0, x1 = geo.fan_box
    font = cv2.FONT_HERSHEY_PLAIN
    scale = max(0.3, 0.62 * W / 240.0)
    line_h = cv2.getTextSize("Ag", font, scale, 1)[0][1] + max(2, int(round(4 * W / 240)))
    bottom = y1  # keep text above the ECG strip

    def put_lines(lines: list[str], x_left: int, width: int, y: int) -> None:
        for text in lines:
            (tw, th), _ = cv2.getTextSize(text, font, scale, 1)
            if tw <= width and y + th < bottom:
                cv2.putText(layer, text, (x_left, y + th), font, scale, grey, 1, cv2.LINE_8)
                y += line_h

    # left margin: a logo block, then acquisition settings
    left_w = x0 - 5
    lw = max(3, min(9, left_w - 3))
    cv2.rectangle(layer, (2, 2), (2 + lw, 2 + lw), grey, -1)
    left = [str(style["device"])[:4], "2D", f"{int(rng.integers(40, 70))}%", f"C{int(rng.integers(40, 60))}",
            f"{int(round(float(style['fps'])))}Hz", "HGen", "P"]
    put_lines(left, 2, left_w - 2, 2 + lw + 4)
    # right margin: depth, MI/TIS, heart rate; depth ticks next to the fan box
    depth_cm = int(rng.integers(14, 19)) if depth_cm is None else int(depth_cm)
    right = [f"{depth_cm}cm", "MI", f"{rng.uniform(0.8, 1.4):.1f}", "TIS", f"{rng.uniform(0.3, 1.0):.1f}",
             f"{int(round(info['heart_rate_bpm']))}", "bpm"]
    put_lines(right, x1 + 8, W - x1 - 9, 2)
    tx = min(W - 2, x1 + 4)
    for k in range(depth_cm + 1):
        ty = int(round(geo.ay + geo.R * k / depth_cm))
        if geo.top <= ty < y1 - 1:
            layer[ty:ty + 2, tx:tx + 2] = grey
    # orientation marker: a small dot inside the fan box's top-right corner (outside the fan)
    mx, my = int(round(geo.cx + 0.6 * (x1 - geo.cx))), y0 + 3
    cv2.circle(layer, (mx, my), max(1, int(round(W / 110))), min(255, grey + 40), -1)
    return layer


def _draw_ecg(strip: np.ndarray, geo: _Geometry, t_now: float, info: Mapping[str, Any], grey: int) -> None:
    """Sweeping ECG trace in the strip below the fan: column x shows the signal at the time it was written."""
    H, W = geo.H, geo.W
    y_top, base = geo.fan_box[1] + 4, H - 3
    amp = max(3.0, (base - y_top) * 0.8)
    xs = np.arange(geo.margin // 2, W - geo.margin // 2)
    n = len(xs)
    sweep_s = 2.5  # seconds across the strip
    cursor = int((t_now / sweep_s % 1.0) * n)
    idx = np.arange(n)
    age = np.where(idx <= cursor, cursor - idx, cursor + n - idx) * (sweep_s / n)
    tau = ((t_now - age) / info["period_s"] + info["phase"]) % 1.0
    ys = np.clip(base - amp * (_ecg(tau) + 0.25) / 1.25, y_top, base)
    pts = np.stack([xs, ys], 1).round().astype(np.int32)
    gap = max(3, n // 40)  # erased gap just ahead of the cursor
    for run in (pts[: cursor + 1], pts[cursor + 1 + gap:]):
        if len(run) > 1:
            cv2.polylines(strip, [run.reshape(-1, 1, 2)], False, grey, 1, cv2.LINE_8)


def _valves(E: np.ndarray, hx: np.ndarray, hy: np.ndarray, blood_map: np.ndarray, opening: float, s_v: float,
            d_tv: float, gap: float, x_lateral: tuple[float, float], valve_e: float, annulus_e: float) -> np.ndarray:
    """Mitral (side +1) and tricuspid (side -1) valve planes into ``E``: a bright line when closed; when open
    (``opening`` > 0.05), blood between bright annulus points. Returns the mask of the open leaflets (two per
    valve, the septal one longer), to be drawn over the blood pools by the caller. ``x_lateral``: the lateral
    annulus x of the mitral and of the tricuspid valve (heart coordinates)."""
    leaflets = np.zeros(hx.shape, bool)
    for side, x_b in zip((1, -1), x_lateral):
        x_a, y_v = side * s_v, (0.0 if side == 1 else -d_tv)
        width = abs(x_b - x_a)
        in_gap = (np.abs(hy - y_v) <= gap) & ((hx - x_a) * side >= 0) & ((hx - x_b) * side <= 0)
        near_ann = np.minimum(np.abs(hx - x_a), np.abs(hx - x_b)) < 0.16 * width
        sel = in_gap & ~near_ann
        E[sel] = blood_map[sel] if opening > 0.05 else valve_e
        E[in_gap & near_ann] = annulus_e
        if opening > 0.05:
            ang = math.radians(80.0) * opening
            l1, l2 = 0.55 * width, 0.4 * width  # septal leaflet longer
            d1 = _seg_dist2(hx, hy, x_a, y_v, x_a + side * l1 * math.cos(ang), y_v - l1 * math.sin(ang))
            d2 = _seg_dist2(hx, hy, x_b, y_v, x_b - side * l2 * math.cos(ang), y_v - l2 * math.sin(ang))
            leaflets |= np.minimum(d1, d2) < 0.0065 ** 2
    return leaflets


def _probe_motion(rng: np.random.Generator, times: np.ndarray, p: Mapping[str, Any]
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Probe rotation (radians) and translation (x, y in units of R) over ``times``: smooth sums of sinusoids."""
    f1, f2 = rng.uniform(0.15, 0.35), rng.uniform(0.5, 1.2)
    ph = rng.uniform(0, 2 * np.pi, size=6)

    def wobble(amp: float, a: float, b: float) -> np.ndarray:
        return amp * (0.7 * np.sin(2 * np.pi * f1 * times + a) + 0.3 * np.sin(2 * np.pi * f2 * times + b))

    rot = wobble(math.radians(p["probe_rotation_deg"]), ph[0], ph[1])
    return rot, wobble(p["probe_shift"], ph[2], ph[3]), wobble(p["probe_shift"], ph[4], ph[5])


def _overlays(geo: _Geometry, style: Mapping[str, Any], p: Mapping[str, Any], info: Mapping[str, Any],
              rng: np.random.Generator, depth_cm: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The static overlay layer kept >= 3 px away from the fan, and the mask of where overlays may go."""
    overlay = _overlay_layer(geo, style, p, info, rng, depth_cm)
    keep = cv2.dilate(geo.fan.astype(np.uint8), np.ones((7, 7), np.uint8)) == 0  # >= 3 px gap to the fan
    overlay[~keep] = 0
    return overlay, keep


class _Speckle:
    """Speckle envelope: complex white noise on the scan-line (polar) grid, AR(1) in time with correlation
    ``rho``, smoothed with an anisotropic Gaussian (``speckle_axial_px`` along the beam, ``speckle_lateral_deg``
    across it), scan converted to the fan box; :meth:`next` gives the Rayleigh envelope of the next frame."""

    def __init__(self, geo: _Geometry, style: Mapping[str, Any], rho: float, rng: np.random.Generator):
        sig_r = float(style["speckle_axial_px"])
        sig_b = float(style["speckle_lateral_deg"]) / geo.beam_deg
        self.kr = cv2.getGaussianKernel(2 * int(math.ceil(3 * sig_r)) + 1, sig_r).astype(np.float32)
        self.kb = cv2.getGaussianKernel(2 * int(math.ceil(3 * sig_b)) + 1, sig_b).astype(np.float32)
        self.norm = 1.0 / math.sqrt(2.0 * float((self.kr.astype(np.float64) ** 2).sum()
                                                * (self.kb.astype(np.float64) ** 2).sum()))
        self.rho, self.innov, self.geo = rho, math.sqrt(1 - rho * rho), geo
        self.state = rng.standard_normal((geo.n_r, geo.n_b, 2), dtype=np.float32)

    def next(self, rng: np.random.Generator) -> np.ndarray:
        self.state *= self.rho
        self.state += self.innov * rng.standard_normal(self.state.shape, dtype=np.float32)
        field = cv2.sepFilter2D(self.state, -1, self.kb, self.kr, borderType=cv2.BORDER_REFLECT)
        field = cv2.remap(field, self.geo.map_b, self.geo.map_r, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        return cv2.magnitude(field[..., 0], field[..., 1]) * self.norm


def _log_image(E: np.ndarray, atten: np.ndarray, env: np.ndarray, lo_db: float, scale_db: float, blur: float
               ) -> np.ndarray:
    """Displayed grey (float, >= 0) of echogenicity ``E`` blurred by the point-spread (``blur`` px), times the
    depth gain ``atten`` and the speckle envelope ``env``, log compressed: ``lo_db`` dB is black, ``scale_db``
    grey levels per dB."""
    if blur > 0:
        E = cv2.GaussianBlur(E, (0, 0), blur)
    img = (20.0 * np.log10(E * atten * env + 1e-6) - lo_db) * scale_db
    np.maximum(img, 0, out=img)
    return img


def _compose_frame(frame: np.ndarray, img: np.ndarray, geo: _Geometry, overlay: np.ndarray, keep: np.ndarray,
                   p: Mapping[str, Any], t_now: float, info: Mapping[str, Any], text_grey: int) -> None:
    """Write the fan image (float, fan box) into ``frame`` as uint8 with the overlays and the ECG strip."""
    np.clip(img, 0, 255, out=img)
    img[~geo.fan_in_box] = 0
    frame[geo.box] = img.astype(np.uint8)
    if p["overlays"]:
        np.maximum(frame, overlay, out=frame)
    if p["ecg"]:
        strip = np.zeros((geo.H, geo.W), np.uint8)
        _draw_ecg(strip, geo, t_now, info, text_grey)
        strip[~keep] = 0
        np.maximum(frame, strip, out=frame)


def render_video(site: str, rng: np.random.Generator, params: Mapping[str, Any], style: Mapping[str, Any],
                 labeled: bool = True) -> tuple[np.ndarray, np.ndarray | None, dict[str, Any]]:
    """Render one video with ``rng`` using the image model of ``params["preset"]`` (v1 if absent); see
    :func:`render_video_v1` for the contract."""
    if params.get("preset", "v1") == "v2":
        from data_schedule.synthetic.echo_synth_v2 import render_video_v2

        return render_video_v2(site, rng, params, style, labeled=labeled)
    return render_video_v1(site, rng, params, style, labeled=labeled)


def render_video_v1(site: str, rng: np.random.Generator, params: Mapping[str, Any], style: Mapping[str, Any],
                    labeled: bool = True) -> tuple[np.ndarray, np.ndarray | None, dict[str, Any]]:
    """Render one v1 video with ``rng``. Returns ``(image uint8 (T, H, W), label int8 (T, H, W) or None, info)``.

    ``params``/``style`` are one entry of :func:`resolve_params`. ``info`` holds ``num_frames``, ``fps``,
    ``heart_rate_bpm``, ``phase``, ``period_s``, ``annotated_frames`` and ``fan_box`` (y0, y1, x0, x1) of the
    sector. The label array is zero except on the annotated frames, where it holds 1 LV, 2 LA, 3 RA, 4 RV.
    """
    p = params
    geo = _Geometry(style)
    H, W = geo.H, geo.W
    T = int(rng.integers(p["frames"][0], p["frames"][1] + 1))
    fps = float(style["fps"])
    hr = float(rng.uniform(*p["heart_rate_bpm"]))
    period = 60.0 / hr
    phase = float(rng.uniform(0, 1))
    info: dict[str, Any] = dict(num_frames=T, fps=fps, heart_rate_bpm=round(hr, 2), phase=phase, period_s=period,
                                fan_box=list(geo.fan_box))
    times = np.arange(T) / fps
    contraction, opening = _cycle((times / period + phase) % 1.0)

    # ---- per-video anatomy: heart coordinates in units of R, origin at the crux, +hx = image right (LV side),
    # +hy = away from the probe (towards the atria); the valve planes sit at hy = 0 (mitral), -d_tv (tricuspid)
    k = float(rng.uniform(*p["heart_scale"]))
    tilt = math.radians(float(rng.uniform(-1, 1) * p["heart_tilt_deg"]))
    crux = (float(rng.uniform(-0.03, 0.03)), float(rng.uniform(0.61, 0.65)))
    L0 = crux[1] - float(rng.uniform(0.15, 0.19))  # LV length (apex to mitral plane) at end diastole
    a_lv = 0.165 * k * float(rng.uniform(0.95, 1.05))
    a_rv = 0.125 * k * float(rng.uniform(0.9, 1.1))
    rv_len = float(rng.uniform(0.68, 0.8))
    a_la, b_la = 0.145 * k * float(rng.uniform(0.93, 1.07)), 0.12 * k * float(rng.uniform(0.93, 1.07))
    a_ra, b_ra = 0.13 * k * float(rng.uniform(0.93, 1.07)), 0.125 * k * float(rng.uniform(0.93, 1.07))
    egg_lv, egg_rv = 0.15, 0.35  # LV bullet, RV more triangular
    s_v, s_a, gap, d_tv = 0.024, 0.012, 0.011, 0.03  # septum half widths, valve-plane half gap, tricuspid offset
    t_lv, t_rv, t_at = 0.05, 0.035, 0.02  # wall thicknesses
    cyc = 0.42  # cavity ellipse centre at 42% of the ventricle length from the valve plane
    v_base = cyc / (1 - cyc)
    base_lv = (1 + egg_lv * v_base) * math.sqrt(1 - v_base ** 2)  # half width at the valve plane / semi-axis
    base_rv = (1 + egg_rv * v_base) * math.sqrt(1 - v_base ** 2)
    rot, shx, shy = _probe_motion(rng, times, p)

    # ---- static maps (inside the fan box)
    fan_b = geo.fan_in_box
    hb, wb = fan_b.shape
    # depth attenuation, with the near field under-gained like a real TGC setting
    atten = (np.exp(-float(style["attenuation"]) * geo.r)
             * (0.08 + 0.92 * np.clip((geo.r - 0.06) / 0.3, 0, 1) ** 1.5)).astype(np.float32)
    haze = (p["near_field_haze"] * np.exp(-geo.r / 0.07)).astype(np.float32)
    tissue = (p["tissue_echo"] * np.clip(1.0 + 0.5 * _smooth_noise(rng, (hb, wb), (6, 7)), 0.2, None)).astype(
        np.float32)
    # myocardium brightness: dimmer where walls run along the beams (sector sides), plus smooth variation
    myo_map = (p["myocardium_echo"]
               * (1.0 - p["lateral_wall_dimming"] * np.minimum(np.abs(geo.theta) / geo.half, 1.0) ** 2)
               * np.clip(1.0 + 0.3 * _smooth_noise(rng, (hb, wb), (5, 5)), 0.4, None)).astype(np.float32)
    # patchy echoes in the blood pools, reverberation arc across the apex
    blood_map = (p["blood_echo"] * (1.0 + 8.0 * p["blood_clutter"] * np.maximum(
        _smooth_noise(rng, (hb, wb), (9, 11)) - 0.3, 0.0))).astype(np.float32)
    r_c = float(rng.uniform(0.12, 0.3))
    haze = haze + (p["apical_clutter"] * np.exp(-(((geo.r - r_c) / 0.05) ** 2))
                   * np.clip(0.6 + 0.6 * _smooth_noise(rng, (hb, wb), (3, 8)), 0, None)).astype(np.float32)
    # smooth boundary irregularity: a static displacement of the heart coordinates (units of R)
    irr = float(p["boundary_irregularity"])
    warp_x = (irr * _smooth_noise(rng, (hb, wb), (5, 6))).astype(np.float32)
    warp_y = (irr * _smooth_noise(rng, (hb, wb), (5, 6))).astype(np.float32)
    overlay, overlay_keep = _overlays(geo, style, p, info, rng)
    speckle = _Speckle(geo, style, float(p["speckle_rho"]), rng)

    # ---- display mapping
    dr = float(style["dynamic_range_db"])
    gain = float(style["gain_db"]) + float(rng.uniform(-1, 1) * p["gain_jitter_db"])
    lo_db = float(p["white_db"]) - gain - dr  # dB (relative to myocardium) shown as black
    scale_db = 255.0 / dr
    noise_std, floor, blur = float(style["noise_std"]), float(p["noise_floor"]), float(style["psf_blur_px"])
    text_grey = int(style["text_grey"])
    myo_e, valve_e = float(p["myocardium_echo"]), float(p["valve_echo"])

    annotated: list[int] = []
    if labeled:
        count = int(rng.integers(p["annotated_frames"][0], p["annotated_frames"][1] + 1))
        annotated = _choose_annotated(rng, T, count, int(p["annotation_margin"]))
    info["annotated_frames"] = annotated
    video = np.zeros((T, H, W), np.uint8)
    label = np.zeros((T, H, W), np.int8) if labeled else None
    dropout_u = rng.uniform(size=(T, 4))
    cos_t, sin_t = math.cos(tilt), math.sin(tilt)

    for t in range(T):
        s, op = float(contraction[t]), float(opening[t])
        # probe motion: rotate about the probe and shift, then into heart coordinates
        c, sn = math.cos(rot[t]), math.sin(rot[t])
        qx = c * geo.px - sn * geo.py + (shx[t] - crux[0])
        qy = sn * geo.px + c * geo.py + (shy[t] - crux[1])
        hx = cos_t * qx - sin_t * qy + warp_x
        hy = sin_t * qx + cos_t * qy + warp_y + p["av_plane_motion"] * s  # the crux moves apically in systole
        L = L0 - p["av_plane_motion"] * s
        Lrv = L * rv_len
        alv, arv = a_lv * (1 - p["ejection"] * s), a_rv * (1 - p["ejection"] * s)
        fill = 1.0 + p["atrial_filling"] * s
        ala, bla, ara, bra = a_la * fill, b_la * fill, a_ra * fill, b_ra * fill
        # cavities: ellipses clipped by the septa and the valve planes, hence disjoint
        lv_c = (s_v + 0.78 * alv, -cyc * L)
        rv_c = (-(s_v + 0.72 * arv), -d_tv - cyc * Lrv)
        e_lv = _ellipse2(hx, hy, lv_c[0], lv_c[1], alv, (1 - cyc) * L, egg_lv)
        e_rv = _ellipse2(hx, hy, rv_c[0], rv_c[1], arv, (1 - cyc) * Lrv, egg_rv)
        e_la = _ellipse2(hx, hy, s_a + 0.85 * ala, gap + 0.8 * bla, ala, bla)
        e_ra = _ellipse2(hx, hy, -(s_a + 0.85 * ara), -d_tv + gap + 0.8 * bra, ara, bra)
        lv = (e_lv < 1) & (hx > s_v) & (hy < -gap)
        rv = (e_rv < 1) & (hx < -s_v) & (hy < -d_tv - gap)
        la = (e_la < 1) & (hx > s_a) & (hy > gap)
        ra = (e_ra < 1) & (hx < -s_a) & (hy > -d_tv + gap)

        # echogenicity: tissue, pericardium, atrial walls, ventricular myocardium (envelope + wall bands)
        E = tissue.copy()
        x_lat, x_rvf = lv_c[0] + 1.02 * alv + t_lv, rv_c[0] - 1.05 * arv - t_rv
        env_c, env_a = 0.5 * (x_lat + x_rvf), 0.5 * (x_lat - x_rvf)
        e_env = _ellipse2(hx, np.minimum(hy, 0.0), env_c, 0.0, env_a, L + t_lv, egg=0.45)
        upper = hy < gap + 0.01
        w_la, w_ra = (1 + t_at / ala) ** 2, (1 + t_at / ara) ** 2
        peri = ((e_env >= 1) & (e_env < 1.2) & upper) | ((e_la >= w_la) & (e_la < 1.6) & (hy > 1.0 * bla)) | (
            (e_ra >= w_ra) & (e_ra < 1.55) & (hy > 1.0 * bra))
        # pericardium: brightest behind the atria, fading out towards the apex
        E[peri] = (p["pericardium_echo"] * np.clip((hy + 0.25) / 0.4, 0.05, 1.0))[peri]
        E[(e_la < w_la) | (e_ra < w_ra)] = p["atrial_wall_echo"]
        myo = ((e_env < 1) & upper) | (e_lv < (1 + t_lv / alv) ** 2) | (e_rv < (1 + t_rv / arv) ** 2)
        E[myo] = myo_map[myo]
        leaflets = _valves(E, hx, hy, blood_map, op, s_v, d_tv, gap,
                           (lv_c[0] + base_lv * alv, rv_c[0] - base_rv * arv), valve_e, 1.3 * myo_e)
        cav = lv | rv | la | ra
        E[cav] = blood_map[cav]
        E[leaflets] = valve_e
        E += haze
        if dropout_u[t, 0] < p["dropout_prob"]:  # shadow / dropout wedge from some depth on
            th_c = (dropout_u[t, 1] * 1.6 - 0.8) * geo.half
            w_lo, w_hi = p["dropout_width_deg"]
            th_w = math.radians(w_lo + (w_hi - w_lo) * dropout_u[t, 2])
            r_start = 0.15 + 0.35 * dropout_u[t, 3]
            wedge = np.clip(1 - np.abs(geo.theta - th_c) / th_w, 0, 1) * np.clip((geo.r - r_start) / 0.05, 0, 1)
            E *= 1 - p["dropout_strength"] * np.sqrt(wedge)
        # speckle (Rayleigh envelope of the smoothed complex field), attenuation, log compression, noise
        env = speckle.next(rng)
        img = _log_image(E, atten, env, lo_db, scale_db, blur)
        img += floor * (0.6 + 0.4 * np.minimum(env, 2.0))
        img += noise_std * rng.standard_normal((hb, wb), dtype=np.float32)
        _compose_frame(video[t], img, geo, overlay, overlay_keep, p, float(times[t]), info, text_grey)
        if label is not None and t in annotated:
            lab = label[t][geo.box]
            lab[lv] = 1
            lab[la] = 2
            lab[ra] = 3
            lab[rv] = 4
            lab[~fan_b] = 0
            present = set(np.unique(lab).tolist())
            if not {1, 2, 3, 4} <= present:
                raise RuntimeError(f"EchoSynth: annotated frame {t} of a {site} video lacks classes "
                                   f"{sorted({1, 2, 3, 4} - present)}; check the geometry parameters")
    return video, label, info


# ----------------------------------------------------------------------------------------------------------
# writing the dataset
# ----------------------------------------------------------------------------------------------------------
def _write_nifti(path: Path, arr_thw: np.ndarray, dtype: type) -> None:
    """Write a ``(T, H, W)`` array so that nibabel reads ``(W, H, T)`` (and SimpleITK ``(T, H, W)``)."""
    import nibabel as nib

    img = nib.Nifti1Image(arr_thw.transpose(2, 1, 0), affine=np.eye(4))
    img.set_data_dtype(dtype)
    img.header.set_slope_inter(1.0, 0.0)
    nib.save(img, str(path))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def _clean_stale_tmp(root: Path) -> None:
    """Remove temporary folders left by generations on this host whose process has died."""
    host = socket.gethostname()
    for d in root.glob(f"{_TMP_PREFIX}*"):
        parts = d.name[len(_TMP_PREFIX):].rsplit("-", 2)  # <host>-<pid>-<token>
        if len(parts) == 3 and parts[0] == host and parts[1].isdigit() and not _pid_alive(int(parts[1])):
            logger.info("EchoSynth: removing stale temporary folder %s", d)
            shutil.rmtree(d, ignore_errors=True)


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.generic):
        return x.item()
    return x


#: per-video draws of v2 written into the manifest (what each video shows: quality, dropout, gap, ...)
_V2_FACTS = ("quality", "depth_cm", "blood_tissue_contrast_db", "wall_dropout", "transient_dropouts", "ias_gap_mm",
             "rib_shadow", "clutter_level", "tgc_residual_db", "foreshortened", "lv_area_change", "rv_area_change",
             "label_bias_px")


def preset_of_manifest(manifest: Mapping[str, Any]) -> str:
    """The preset an ``echo_synth.json`` was generated with (manifests before v2 have no ``preset``: v1)."""
    return str(manifest.get("preset") or "v1")


def _generate_into(out: Path, seed: int, videos_per_site: int, params: Mapping[str, Any],
                   styles: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Write every site into ``out`` (an empty folder); returns the manifest."""
    videos: list[dict[str, Any]] = []
    n_unlab_first = min(int(params["unlabeled_in_first_site"]), max(0, videos_per_site - 1))
    pick = np.random.default_rng([seed, 0, 2_000_003])
    unlab_first = set(pick.choice(videos_per_site, size=n_unlab_first, replace=False).tolist()
                      if n_unlab_first else [])
    for si, site in enumerate(SITE_NAMES):
        site_dir = out / site
        site_dir.mkdir()
        for vi, patient in enumerate(_patient_numbers(seed, si, videos_per_site)):
            labeled = site not in UNLABELED_SITES and not (si == 0 and vi in unlab_first)
            rng = np.random.default_rng([seed, si, vi])
            image, label, info = render_video(site, rng, params, styles[site], labeled=labeled)
            img_name, lab_name = video_file_names(site, patient)
            _write_nifti(site_dir / img_name, image, np.uint8)
            if label is not None:
                _write_nifti(site_dir / lab_name, label, np.int8)
            videos.append(dict(site=site, patient=patient, image=f"{site}/{img_name}",
                               label=f"{site}/{lab_name}" if label is not None else None,
                               num_frames=int(image.shape[0]), height=int(image.shape[1]), width=int(image.shape[2]),
                               annotated_frames=info["annotated_frames"], fps=info["fps"],
                               heart_rate_bpm=info["heart_rate_bpm"], fan_box=info["fan_box"],
                               **{k: info[k] for k in _V2_FACTS if k in info}))
            del image, label
    preset = params.get("preset", "v1")
    return dict(generator="EchoSynth", version=GENERATOR_VERSIONS[preset], preset=preset, seed=seed,
                videos_per_site=videos_per_site,
                layout="CardiacUDC (Kaggle release): <site>/patient[-]{N}-4_{image,label}.nii.gz, nibabel (W, H, T), "
                       "image uint8, label int8",
                classes={str(k): v for k, v in CLASS_NAMES.items()}, params=_jsonable(dict(params)),
                site_styles=_jsonable({k: dict(v) for k, v in styles.items()}), videos=videos)


def generate_echo_synth(root: str | os.PathLike, seed: int = 0, videos_per_site: int = 8, *,
                        overwrite: bool = False, preset: str = DEFAULT_PRESET, **style_overrides: Any) -> Path:
    """Generate EchoSynth into ``<root>/cardiacUDC_dataset`` and return that path.

    The dataset is written into a temporary sibling folder and renamed into place at the end, so an
    interrupted generation never leaves a partial dataset. An existing dataset is never overwritten unless
    ``overwrite=True`` (``FileExistsError`` otherwise). ``preset`` picks the image model ("v2", the default, or
    "v1"); ``style_overrides`` are documented in the module docstrings and in :func:`resolve_params`.
    """
    if int(videos_per_site) < 1:
        raise ValueError(f"videos_per_site must be >= 1, got {videos_per_site}")
    params, styles = resolve_params(preset, **style_overrides)
    root = Path(root)
    final = root / DATASET_DIRNAME
    if final.exists() and not overwrite:
        raise FileExistsError(f"EchoSynth: {final} already exists; refusing to overwrite it "
                              f"(pass overwrite=True, or --overwrite on the command line)")
    root.mkdir(parents=True, exist_ok=True)
    _clean_stale_tmp(root)
    tmp = root / f"{_TMP_PREFIX}{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    old: Path | None = None
    try:
        t0 = time.perf_counter()
        manifest = _generate_into(tmp, int(seed), int(videos_per_site), params, styles)
        manifest["overrides"] = _jsonable(style_overrides)
        (tmp / "echo_synth.json").write_text(json.dumps(manifest, indent=1) + "\n")
        if final.exists() and overwrite:
            old = root / f"{_TMP_PREFIX}{socket.gethostname()}-{os.getpid()}-old{uuid.uuid4().hex[:8]}"
            os.rename(final, old)
        try:
            os.rename(tmp, final)
        except OSError as e:  # someone else published a dataset meanwhile
            raise FileExistsError(f"EchoSynth: {final} appeared while generating; left it untouched") from e
        logger.info("EchoSynth: wrote %d videos to %s in %.1f s", len(manifest["videos"]), final,
                    time.perf_counter() - t0)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and not final.exists():
            os.rename(old, final)  # put the previous dataset back
            old = None
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    return final


def _check_existing(final: Path, preset: str) -> Path:
    """``final`` if it may serve ``preset``: real data (no manifest) or EchoSynth of that preset."""
    manifest_file = final / "echo_synth.json"
    if manifest_file.is_file():
        try:
            have = preset_of_manifest(json.loads(manifest_file.read_text()))
        except (ValueError, AttributeError):
            return final  # not our manifest: leave the folder to the data checks
        if have != preset:
            from data_schedule.sources.nifti import DataError

            raise DataError(
                f"{manifest_file} says EchoSynth preset {have!r} ({GENERATOR_VERSIONS.get(have, '?')}) but preset "
                f"{preset!r} was asked for; move that folder away (nothing is deleted or regenerated over it) or "
                f"point the root elsewhere (data.roots / ECHO_SYNTH_ROOT for v2, ECHO_SYNTH_V1_ROOT for v1)")
    return final


def ensure_echo_synth(root: str | os.PathLike, seed: int = 0, videos_per_site: int = 8, *,
                      preset: str = DEFAULT_PRESET, **style_overrides: Any) -> Path:
    """Return ``<root>/cardiacUDC_dataset``, generating EchoSynth (``preset``) there first if it is missing.

    An existing folder is used as is if it is real CardiacUDC or EchoSynth of the same preset; EchoSynth of
    another preset (e.g. a v1 folder from before v2 became the default) raises ``DataError`` saying so.
    Concurrent callers on one machine (e.g. several DDP ranks) are serialised with a lock file, so the dataset
    is generated once.
    """
    root = Path(root)
    final = root / DATASET_DIRNAME
    if final.exists():
        return _check_existing(final, preset)
    root.mkdir(parents=True, exist_ok=True)
    lock_file = open(root / f".{DATASET_DIRNAME}.lock", "a+")
    try:
        try:
            import fcntl

            fcntl.flock(lock_file, fcntl.LOCK_EX)
        except ImportError:  # non-POSIX: rely on the atomic rename
            pass
        if final.exists():
            return _check_existing(final, preset)
        msg = (f"EchoSynth: {final} not found; generating the embedded synthetic echocardiography dataset "
               f"(preset {preset}, seed={seed}, videos_per_site={videos_per_site}, CardiacUDC layout) ...")
        logger.info(msg)
        if not logger.hasHandlers():
            print(msg, flush=True)
        try:
            return generate_echo_synth(root, seed=seed, videos_per_site=videos_per_site, preset=preset,
                                       **style_overrides)
        except FileExistsError:
            if final.exists():
                return final
            raise
    finally:
        lock_file.close()
