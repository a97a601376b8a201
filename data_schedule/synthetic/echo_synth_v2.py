"""EchoSynth v2 image model: apical four-chamber echo as ambiguous as real A4C, calibrated to a real clip.

v1 (``echo_synth.render_video``) draws every wall as a continuous bright ring on a bright, clean background: one
frame is a flood fill and every method ties at ~0.965 mDice. v2 keeps v1's layout, sector geometry, overlays,
ECG, cardiac cycle and speckle model, and adds the ways real A4C frames are ambiguous (REFERENCE §7), each a
parameter of :data:`DEFAULT_PARAMS_V2` with its published range. Drawn per video unless said:

* **image quality** ``quality_mix`` good / medium / poor = 35 / 45 / 20 %: sets blood echo (blood/tissue
  contrast), near-field clutter level, noise and the wall dropout; a *poor* video always loses at least two
  contiguous LV wall segments (``poor_dropout_fraction`` of the lateral wall from the apex down, i.e. the apical
  and mid segments).
* **specular wall visibility**: a wall's echo falls with the angle between its normal and the beam
  (``specular_floor`` for a wall parallel to the beams), so the LV lateral wall, the RV free wall and the
  interatrial septum are dim and broken while the valve planes and the apex are bright.
* **beam-tied wall dropout** (``wall_dropout_prob`` besides the poor videos, 30-50 % of videos overall): a
  segment of ``wall_dropout_fraction`` of one beam-parallel wall (LV lateral, RV free wall or interatrial septum,
  ``wall_dropout_walls``), ``wall_dropout_db`` dimmer, fixed to the probe's beams (the heart moves under it),
  present in ``wall_dropout_persistence`` of the frames with ``wall_dropout_jitter_deg`` of angular jitter;
  plus **transient partial dropouts** (``transient_dropout_*``) of 3-10 frames in 10-20 % of the frames.
* **interatrial septum gap** (``ias_gap_prob``, ``ias_gap_mm``): the septum's echo is missing over 5-15 mm.
* **near-field clutter / reverberation** (``clutter_*``): bands ``clutter_spacing_mm`` apart over the top
  ``clutter_depth_cm``, at ``clutter_level`` times the myocardium's echo, static in the image while the heart
  moves under them (a temporal model can separate them, one frame cannot); it fills the apical cavity, so the
  apical blood/tissue contrast drops to a few dB.
* **rib shadow** (``rib_shadow_prob``): 0-1 fixed angular shadow per video, ``rib_shadow_width_deg`` wide,
  ``rib_shadow_attenuation``; **TGC residual** (``tgc_residual_db``): a gain slope of either sign with depth.
* **anatomy** varied between videos: size (``heart_scale``), position (``heart_shift``), tilt
  (``heart_tilt_deg``), LV length with foreshortening (``foreshortening_prob``, ``foreshortening``: LV 10-20 %
  short, blunt apex), chamber proportions, heart rate, LV area change ``lv_area_change`` (35-60 %), RV fractional
  area change ``rv_area_change`` (>= 35 %), atrial filling.
* **label realism**: annotations follow the cavity (never the visible pixels: a dropped-out wall or a septal
  gap leaves the label unchanged), with a smooth radial contour jitter of ``label_jitter_px`` (px at 128², the
  CAMUS inter-observer level) drawn afresh for every annotated frame. Cavities stay disjoint (every class is
  clipped by the same septum and valve planes of the jittered coordinates).
* **speckle** matched to the real clip: grain on the scan-line grid (lateral size grows with depth), AR(1)
  temporal correlation ``speckle_rho``; display levels (``white_db``, ``dynamic_range_db``, ``noise_floor``)
  match its grey histogram (``benchmarks/echo_realism.py``).

Every effect can be switched off (probability or level 0) for ablations of the data itself; each is measured by
a test in ``tests/data/test_echo_synth_v2.py``. The defaults were frozen after calibrating the per-frame U-Net
baseline alone (README, "EchoSynth v2"), never on the temporal models' results.
"""
from __future__ import annotations

import math
from typing import Any, Mapping

import cv2
import numpy as np

from data_schedule.synthetic import echo_synth as v1

__all__ = ["GENERATOR_VERSION_V2", "DEFAULT_PARAMS_V2", "SITE_STYLES_V2", "QUALITIES", "render_video_v2"]

GENERATOR_VERSION_V2 = "2.0.0"
QUALITIES: tuple[str, ...] = ("good", "medium", "poor")

#: Global parameters of v2. (low, high) = drawn uniformly per video; mm/cm are converted with ``depth_cm``.
DEFAULT_PARAMS_V2: dict[str, Any] = {
    "frames": (40, 80),
    "annotated_frames": (5, 7),
    "annotation_margin": 5,
    "unlabeled_in_first_site": 1,
    "depth_cm": (15, 19),  # imaging depth (= sector radius) per video, integer cm: the heart's size in the image
    # scales with 16 / depth; the anatomy below is in units of the radius of a 16 cm sector
    "heart_rate_bpm": (50.0, 120.0),
    # anatomy
    "heart_scale": (0.8, 1.0),  # overall chamber size factor (times 16 / depth_cm in the image)
    "heart_shift": 0.03,  # max |shift| of the crux, units of R
    "heart_tilt_deg": 9.0,  # max |tilt| of the long axis
    "lv_length": (0.38, 0.48),  # LV long axis (apex to mitral plane) at end diastole, units of R
    "foreshortening_prob": 0.15,  # share of videos with a foreshortened LV (10-20 % of videos)
    "foreshortening": (0.10, 0.20),  # fractional shortening of the LV long axis in those videos
    "lv_area_change": (0.35, 0.60),  # LV cavity area change end diastole -> end systole
    "rv_area_change": (0.35, 0.55),  # RV fractional area change
    "atrial_filling": (0.10, 0.22),  # fractional growth of the atria at end systole
    "av_plane_motion": (0.035, 0.07),  # valve-plane excursion towards the apex at end systole (units of R)
    "probe_rotation_deg": 2.0,
    "probe_shift": 0.02,
    "boundary_irregularity": 0.014,
    # echogenicity (linear amplitude, myocardium = 1)
    # blood/tissue contrast (myocardium over blood pool, dB) per video by image quality: 15-30 dB in a good
    # window (REFERENCE §7), down to a few dB in a poor one (haze / side-lobe clutter fills the cavities)
    "blood_tissue_contrast_db": {"good": (18.0, 30.0), "medium": (10.0, 16.0), "poor": (3.0, 8.0)},
    "blood_clutter": 1.0,
    "tissue_echo": 0.08,
    "myocardium_echo": 1.0,
    "atrial_wall_echo": 0.45,
    "septum_echo": 0.6,  # interatrial septum
    "pericardium_echo": 2.2,
    "valve_echo": 0.6,
    "specular_floor": (0.15, 0.4),  # echo of a wall parallel to the beams, relative to one facing them
    # image quality
    "quality_mix": (0.35, 0.45, 0.20),  # good / medium / poor
    "noise_scale": {"good": 0.6, "medium": 0.8, "poor": 1.1},
    # wall dropout tied to the beams
    "wall_dropout_prob": 0.375,  # in good/medium videos (poor videos always have one): 50 % overall
    "wall_dropout_walls": {"lv_lateral": 0.5, "rv_free": 0.25, "ias": 0.25},
    "wall_dropout_fraction": (0.15, 0.30),  # share of the wall's length
    "poor_dropout_fraction": (0.55, 0.75),  # poor videos: apical + mid lateral LV segments (>= 2 contiguous)
    "wall_dropout_db": (8.0, 20.0),
    "wall_dropout_persistence": 0.85,  # share of frames in which the dropout is present
    "wall_dropout_jitter_deg": 2.0,
    "transient_dropout_frames": (0.10, 0.20),  # share of frames inside a transient dropout
    "transient_dropout_len": (3, 10),  # frames per transient dropout
    "transient_dropout_db": (4.0, 10.0),
    # septal gap, clutter, rib shadow, TGC
    "ias_gap_prob": 0.5,
    "ias_gap_mm": (5.0, 15.0),
    "clutter_level": {"good": (0.3, 0.4), "medium": (0.35, 0.5), "poor": (0.45, 0.6)},  # x myocardium
    "clutter_depth_cm": (2.0, 4.0),
    "clutter_spacing_mm": (3.0, 8.0),
    "rib_shadow_prob": 0.5,
    "rib_shadow_width_deg": (5.0, 15.0),
    "rib_shadow_attenuation": (0.5, 0.9),
    "tgc_residual_db": (3.0, 6.0),  # |gain slope| over the full depth, sign drawn per video
    # labels
    "label_jitter_px": 1.25,  # smooth radial contour jitter (std, px at 128²) of each annotated frame
    "label_bias_px": 0.0,  # per video, the annotator's contours sit up to this far outside/inside (px at 128²)
    "annotator": 0,  # > 0: another annotator's labels of the same videos (inter-observer measurements)
    # display and speckle
    "gain_jitter_db": 3.0,
    "operator_gain": 0.35,
    "white_db": 28.0,
    "speckle_rho": 0.97,
    "scan_blur_px": (1.5, 0.7),  # (lateral, axial) smoothing of the displayed image by scan conversion
    "noise_floor": 20.0,
    "overlays": True,
    "ecg": True,
}

#: v1's device styles (size, frame rate, sector, text) with v2's display: the dynamic range and gain offsets
#: of the sites quartered around 50 dB / 0 dB, speckle 1.3x longer axially and 1.5x laterally
SITE_STYLES_V2: dict[str, dict[str, Any]] = {
    site: {**st, "dynamic_range_db": 50.0 + 0.25 * (st["dynamic_range_db"] - 45.0), "gain_db": 0.25 * st["gain_db"],
           "speckle_axial_px": round(1.3 * st["speckle_axial_px"], 3),
           "speckle_lateral_deg": round(1.5 * st["speckle_lateral_deg"], 3)}
    for site, st in v1.SITE_STYLES.items()
}


_STREAMS = ("quality", "anatomy", "tgc", "clutter", "rib", "dropout", "transient", "ias_gap", "labels", "speckle",
            "noise", "contrast")


def _u(rng: np.random.Generator, lo_hi: Any) -> float:
    lo, hi = lo_hi
    return float(rng.uniform(lo, hi))


def _by_quality(value: Any, quality: str) -> Any:
    return value[quality] if isinstance(value, Mapping) else value


def _soft_band(x: np.ndarray, lo: float, hi: float, edge: float) -> np.ndarray:
    """1 inside [lo, hi], falling linearly to 0 over ``edge`` outside."""
    return np.clip(np.minimum(x - lo, hi - x) / edge + 1.0, 0.0, 1.0)


class _Anatomy:
    """One video's heart: chamber sizes and shapes, cycle amplitudes, and the cavity/wall masks of a frame."""

    def __init__(self, rng: np.random.Generator, p: Mapping[str, Any]):
        k = _u(rng, p["heart_scale"])
        self.tilt = math.radians(float(rng.uniform(-1, 1) * p["heart_tilt_deg"]))
        sh = float(p["heart_shift"])
        # the crux a little left of the sector axis: the LV (image right) is the widest chamber
        self.crux = (-0.035 + float(rng.uniform(-sh, sh)), 0.63 + float(rng.uniform(-0.6, 0.6) * sh))
        self.foreshortened = bool(rng.uniform() < p["foreshortening_prob"])
        fs = _u(rng, p["foreshortening"])  # drawn either way: the switch leaves the other draws alone
        self.fs = fs if self.foreshortened else 0.0
        self.L0 = min(_u(rng, p["lv_length"]) * k, self.crux[1] - 0.14) * (1.0 - self.fs)
        self.a_lv = 0.15 * k * float(rng.uniform(0.9, 1.08))
        self.a_rv = 0.125 * k * float(rng.uniform(0.8, 1.15))
        self.rv_len = float(rng.uniform(0.62, 0.82))
        self.a_la, self.b_la = 0.145 * k * float(rng.uniform(0.85, 1.12)), 0.12 * k * float(rng.uniform(0.85, 1.12))
        self.a_ra, self.b_ra = 0.13 * k * float(rng.uniform(0.85, 1.12)), 0.125 * k * float(rng.uniform(0.85, 1.12))
        # a foreshortened LV looks rounder (the apex is cut obliquely)
        self.egg_lv = float(rng.uniform(0.1, 0.22)) * (0.4 if self.foreshortened else 1.0)
        self.egg_rv = float(rng.uniform(0.28, 0.42))
        self.s_v, self.s_a, self.gap, self.d_tv = 0.024, 0.012, 0.011, 0.03
        self.t_lv, self.t_rv, self.t_at = 0.05 * float(rng.uniform(0.85, 1.15)), 0.035, 0.018
        self.cyc = 0.42
        self.av = _u(rng, p["av_plane_motion"])
        lv_fac, rv_fac = _u(rng, p["lv_area_change"]), _u(rng, p["rv_area_change"])
        self.lv_area_change, self.rv_area_change = lv_fac, rv_fac
        self.fill = _u(rng, p["atrial_filling"])
        # the width narrowing at end systole that gives the drawn area changes along with the long-axis
        # shortening, solved on a coarse grid of heart coordinates (bisection; area falls as narrowing grows)
        gx, gy = np.meshgrid(np.linspace(-0.45, 0.45, 181, dtype=np.float32),
                             np.linspace(-0.75, 0.1, 171, dtype=np.float32))
        self.e_lv = self.e_rv = 0.0
        ed = self.frame(gx, gy, 0.0)["cav"]
        targets = {"lv": (1 - lv_fac) * ed["lv"].sum(), "rv": (1 - rv_fac) * ed["rv"].sum()}
        lo, hi = {"lv": 0.0, "rv": 0.0}, {"lv": 0.9, "rv": 0.9}
        for _ in range(14):
            self.e_lv, self.e_rv = 0.5 * (lo["lv"] + hi["lv"]), 0.5 * (lo["rv"] + hi["rv"])
            es = self.frame(gx, gy, 1.0)["cav"]
            for name in ("lv", "rv"):
                mid = 0.5 * (lo[name] + hi[name])
                if es[name].sum() > targets[name]:
                    lo[name] = mid
                else:
                    hi[name] = mid
        self.e_lv, self.e_rv = 0.5 * (lo["lv"] + hi["lv"]), 0.5 * (lo["rv"] + hi["rv"])

    def frame(self, hx: np.ndarray, hy0: np.ndarray, s: float) -> dict[str, Any]:
        """Cavity masks and the geometry needed for echoes at contraction ``s`` (0 = ED, 1 = ES), given heart
        coordinates before the valve-plane motion (``hy0``)."""
        hy = hy0 + self.av * s
        L = self.L0 - self.av * s
        Lrv = L * self.rv_len
        alv, arv = self.a_lv * (1 - self.e_lv * s), self.a_rv * (1 - self.e_rv * s)
        fill = 1.0 + self.fill * s
        ala, bla, ara, bra = self.a_la * fill, self.b_la * fill, self.a_ra * fill, self.b_ra * fill
        s_v, s_a, gap, d_tv, cyc = self.s_v, self.s_a, self.gap, self.d_tv, self.cyc
        lv_c = (s_v + 0.78 * alv, -cyc * L)
        rv_c = (-(s_v + 0.72 * arv), -d_tv - cyc * Lrv)
        e_lv = v1._ellipse2(hx, hy, lv_c[0], lv_c[1], alv, (1 - cyc) * L, self.egg_lv)
        e_rv = v1._ellipse2(hx, hy, rv_c[0], rv_c[1], arv, (1 - cyc) * Lrv, self.egg_rv)
        e_la = v1._ellipse2(hx, hy, s_a + 0.85 * ala, gap + 0.8 * bla, ala, bla)
        e_ra = v1._ellipse2(hx, hy, -(s_a + 0.85 * ara), -d_tv + gap + 0.8 * bra, ara, bra)
        cav = dict(lv=(e_lv < 1) & (hx > s_v) & (hy < -gap), rv=(e_rv < 1) & (hx < -s_v) & (hy < -d_tv - gap),
                   la=(e_la < 1) & (hx > s_a) & (hy > gap), ra=(e_ra < 1) & (hx < -s_a) & (hy > -d_tv + gap))
        return dict(hy=hy, L=L, alv=alv, arv=arv, ala=ala, bla=bla, ara=ara, bra=bra, lv_c=lv_c, rv_c=rv_c,
                    e_lv=e_lv, e_rv=e_rv, e_la=e_la, e_ra=e_ra, cav=cav)


def _label_frame(an: _Anatomy, hx: np.ndarray, hy0: np.ndarray, s: float, fan_b: np.ndarray) -> np.ndarray:
    cav = an.frame(hx, hy0, s)["cav"]
    lab = np.zeros(hx.shape, np.int8)
    for value, name in ((1, "lv"), (2, "la"), (3, "ra"), (4, "rv")):
        lab[cav[name]] = value
    lab[~fan_b] = 0
    return lab


def _shift_contours(lab: np.ndarray, px: float, fan_b: np.ndarray) -> np.ndarray:
    """Move every class contour ``px`` pixels outwards (> 0, into the background only) or inwards (< 0)."""
    out = lab.copy()
    for c in (1, 2, 3, 4):
        inside = (lab == c).astype(np.uint8)
        if px < 0:
            depth = cv2.distanceTransform(inside, cv2.DIST_L2, 3)
            out[(inside > 0) & (depth <= -px)] = 0
        else:
            dist = cv2.distanceTransform(1 - inside, cv2.DIST_L2, 3)
            out[(out == 0) & (dist <= px) & fan_b] = c
    return out


def _wall_wedge(wall: np.ndarray, geo: v1._Geometry, frac: float, where: float | None
                ) -> tuple[float, float, float, float] | None:
    """A dropout region in probe coordinates ``(theta_c, half_width, r_lo, r_hi)`` covering ``frac`` of the
    length (depth extent) of the wall pixels ``wall``, starting at the apical end (``where`` None) or at
    ``where`` in [0, 1] of the free length; None if the wall is not in the fan."""
    r, th = geo.r[wall], geo.theta[wall]
    if r.size < 8:
        return None
    r_min, r_max = np.percentile(r, [2, 98])
    length = (r_max - r_min) * frac
    start = r_min if where is None else float(r_min + where * (r_max - r_min - length))
    sel = (r >= start) & (r <= start + length)
    if not sel.any():
        return None
    tc = float(np.median(th[sel]))
    hw = float(np.percentile(np.abs(th[sel] - tc), 90)) + math.radians(1.5)
    return tc, hw, float(start), float(start + length)


def _wedge_map(geo: v1._Geometry, tc: float, hw: float, r_lo: float, r_hi: float) -> np.ndarray:
    """Soft 0..1 region between angles tc±hw and depths r_lo..r_hi."""
    ang = _soft_band(geo.theta, tc - hw, tc + hw, math.radians(1.5))
    dep = _soft_band(geo.r, r_lo, r_hi, 0.02)
    return (ang * dep).astype(np.float32)


def render_video_v2(site: str, rng: np.random.Generator, params: Mapping[str, Any], style: Mapping[str, Any],
                    labeled: bool = True) -> tuple[np.ndarray, np.ndarray | None, dict[str, Any]]:
    """Render one v2 video with ``rng``; same contract as :func:`echo_synth.render_video`. ``info`` also holds
    the per-video draws: ``quality``, ``wall_dropout`` (wall, fraction, dB or None), ``ias_gap_mm``,
    ``rib_shadow``, ``clutter_level``, ``tgc_residual_db``, ``foreshortened``, ``lv_area_change``,
    ``rv_area_change``."""
    p = params
    geo = v1._Geometry(style)
    H, W = geo.H, geo.W
    T = int(rng.integers(p["frames"][0], p["frames"][1] + 1))
    fps = float(style["fps"])
    hr = _u(rng, p["heart_rate_bpm"])
    period = 60.0 / hr
    phase = float(rng.uniform(0, 1))
    info: dict[str, Any] = dict(num_frames=T, fps=fps, heart_rate_bpm=round(hr, 2), phase=phase, period_s=period,
                                fan_box=list(geo.fan_box))
    times = np.arange(T) / fps
    contraction, opening = v1._cycle((times / period + phase) % 1.0)
    lo_d, hi_d = p["depth_cm"]
    depth_cm = int(rng.integers(int(lo_d), int(hi_d) + 1))
    zoom = 16.0 / depth_cm  # image units per heart unit
    mm = 1.0 / (10.0 * depth_cm)  # one millimetre in units of the image's R
    info["depth_cm"] = depth_cm

    # one independent stream per effect: switching an effect off (or changing its range) leaves every other
    # draw of the video unchanged, so an effect's ablation differs from the default only where it acts
    fx = dict(zip(_STREAMS, rng.spawn(len(_STREAMS))))
    mix = np.asarray(p["quality_mix"], float)
    quality = QUALITIES[int(fx["quality"].choice(3, p=mix / mix.sum()))]
    an = _Anatomy(fx["anatomy"], p)
    info.update(quality=quality, foreshortened=an.foreshortened, lv_area_change=round(an.lv_area_change, 3),
                rv_area_change=round(an.rv_area_change, 3))

    rot, shx, shy = v1._probe_motion(rng, times, p)

    fan_b = geo.fan_in_box
    hb, wb = fan_b.shape
    smooth = v1._smooth_noise
    # ---- static maps (probe coordinates: they stay put while the heart moves)
    tgc_db = _u(fx["tgc"], p["tgc_residual_db"]) * float(fx["tgc"].choice([-1.0, 1.0]))
    info["tgc_residual_db"] = round(tgc_db, 2)
    atten = (np.exp(-float(style["attenuation"]) * geo.r) * 10 ** (tgc_db * (geo.r - 0.5) / 20.0)
             * (0.15 + 0.85 * np.clip((geo.r - 0.06) / 0.25, 0, 1) ** 1.5)).astype(np.float32)
    tissue = (p["tissue_echo"] * np.clip(1.0 + 0.6 * smooth(rng, (hb, wb), (6, 7)), 0.15, None)).astype(np.float32)
    myo_var = np.clip(1.0 + 0.5 * smooth(rng, (hb, wb), (6, 6)), 0.25, None).astype(np.float32)
    contrast_db = _u(fx["contrast"], _by_quality(p["blood_tissue_contrast_db"], quality))
    info["blood_tissue_contrast_db"] = round(contrast_db, 2)
    blood_e = float(p["myocardium_echo"]) * 10 ** (-contrast_db / 20.0)
    blood_map = (blood_e * (1.0 + 6.0 * p["blood_clutter"] * np.maximum(smooth(rng, (hb, wb), (9, 11)) - 0.3, 0.0))
                 ).astype(np.float32)
    # near-field clutter: reverberation bands over the top few cm, static, patchy across the beams
    g = fx["clutter"]
    lvl = _u(g, _by_quality(p["clutter_level"], quality)) * float(p["myocardium_echo"])
    depth = _u(g, p["clutter_depth_cm"]) * 10 * mm
    spacing = _u(g, p["clutter_spacing_mm"]) * mm
    info["clutter_level"] = round(lvl, 3)
    info["clutter_depth"] = round(depth, 4)  # units of R
    bands = 0.5 + 0.5 * np.cos(2 * np.pi * (geo.r - geo.R0_FRAC) / spacing + float(g.uniform(0, 2 * np.pi)))
    reach = np.clip(1.0 - (geo.r - geo.R0_FRAC) / max(depth, 1e-6), 0.0, 1.0) ** 0.7
    patch = np.clip(0.7 + 0.5 * smooth(g, (hb, wb), (3, 9)), 0.15, 1.3)
    clutter = (lvl * (0.35 + 0.65 * bands) * reach * patch).astype(np.float32)
    # rib shadow
    shadow = np.ones((hb, wb), np.float32)
    info["rib_shadow"] = None
    g = fx["rib"]
    has_rib = g.uniform() < p["rib_shadow_prob"]
    w = math.radians(_u(g, p["rib_shadow_width_deg"])) / 2
    tc = float(g.uniform(-1, 1)) * (geo.half - w)
    att = _u(g, p["rib_shadow_attenuation"])
    if has_rib:
        shadow -= att * _wedge_map(geo, tc, w, geo.R0_FRAC + 0.03, 2.0)
        info["rib_shadow"] = dict(center_deg=round(math.degrees(tc), 2), width_deg=round(math.degrees(2 * w), 2),
                                  attenuation=round(att, 3))
    irr = float(p["boundary_irregularity"])
    warp_x = (irr * smooth(rng, (hb, wb), (5, 6))).astype(np.float32)
    warp_y = (irr * smooth(rng, (hb, wb), (5, 6))).astype(np.float32)
    overlay, overlay_keep = v1._overlays(geo, style, p, info, rng, depth_cm=depth_cm)
    spec_floor = _u(rng, p["specular_floor"])
    # radial unit vectors (beam directions) of the pixels
    ux, uy = (geo.px / np.maximum(geo.r, 1e-6)).astype(np.float32), (geo.py / np.maximum(geo.r, 1e-6)).astype(
        np.float32)

    cos_t, sin_t = math.cos(an.tilt), math.sin(an.tilt)

    def heart_coords(t: int) -> tuple[np.ndarray, np.ndarray]:
        c, sn = math.cos(rot[t]), math.sin(rot[t])
        qx = (c * geo.px - sn * geo.py) / zoom + (shx[t] - an.crux[0])
        qy = (sn * geo.px + c * geo.py) / zoom + (shy[t] - an.crux[1])
        return cos_t * qx - sin_t * qy + warp_x, sin_t * qx + cos_t * qy + warp_y

    def ias_band(g: dict[str, Any], hx: np.ndarray) -> np.ndarray:
        """The interatrial septum's band of a frame (between the atria, below the valve planes)."""
        hy = g["hy"]
        return (np.abs(hx) < an.s_a + an.t_at) & (hy > an.gap) & (hy < an.gap + 1.6 * min(g["bla"], g["bra"]))

    def walls(g: dict[str, Any], hx: np.ndarray) -> dict[str, np.ndarray]:
        """Beam-parallel walls of a frame: LV lateral wall, RV free wall, interatrial septum."""
        hy = g["hy"]
        lv_band = (g["e_lv"] >= 1) & (g["e_lv"] < (1 + an.t_lv / g["alv"]) ** 2)
        rv_band = (g["e_rv"] >= 1) & (g["e_rv"] < (1 + an.t_rv / g["arv"]) ** 2)
        return dict(lv_lateral=lv_band & (hx > g["lv_c"][0] + 0.5 * g["alv"]) & (hy < -an.gap),
                    rv_free=rv_band & (hx < g["rv_c"][0] - 0.5 * g["arv"]) & (hy < -an.d_tv - an.gap),
                    ias=ias_band(g, hx))

    # ---- wall dropout fixed to the beams, placed on the end-diastolic anatomy
    hx0, hy00 = heart_coords(0)
    g0 = an.frame(hx0, hy00, 0.0)
    walls0 = walls(g0, hx0)
    info["wall_dropout"] = None
    wedge = None
    g = fx["dropout"]
    has_dropout = g.uniform() < p["wall_dropout_prob"]
    names = list(p["wall_dropout_walls"])
    probs = np.asarray([p["wall_dropout_walls"][n] for n in names], float)
    name = names[int(g.choice(len(names), p=probs / probs.sum()))]
    frac, where, poor_frac = _u(g, p["wall_dropout_fraction"]), float(g.uniform()), _u(g, p["poor_dropout_fraction"])
    db = _u(g, p["wall_dropout_db"])
    present = g.uniform(size=T) < p["wall_dropout_persistence"]
    jitter = g.uniform(-1, 1, size=T) * math.radians(p["wall_dropout_jitter_deg"])
    if quality == "poor":  # >= 2 contiguous segments: the apical and mid lateral LV wall
        has_dropout, name, frac, where = True, "lv_lateral", poor_frac, None
    if has_dropout and present.any():
        region = _wall_wedge(walls0[name] & fan_b, geo, frac, where)
        if region is not None:
            wedge = (region, 1.0 - 10 ** (-db / 20.0))
            info["wall_dropout"] = dict(wall=name, fraction=round(frac, 3), db=round(db, 2),
                                        region=[round(x, 4) for x in region], frames=int(present.sum()))
    # transient partial dropouts: episodes of 3-10 frames on a random beam-parallel wall
    g = fx["transient"]
    transient: list[tuple[int, int, float, tuple[float, float, float, float] | None]] = []
    budget = int(round(_u(g, p["transient_dropout_frames"]) * T))
    lo_len, hi_len = p["transient_dropout_len"]
    while budget >= max(1, lo_len):
        n = int(min(budget, g.integers(lo_len, hi_len + 1)))
        t0 = int(g.integers(0, max(1, T - n + 1)))
        wall = walls0[str(g.choice(list(walls0)))] & fan_b
        att = 1.0 - 10 ** (-_u(g, p["transient_dropout_db"]) / 20.0)
        transient.append((t0, t0 + n, att, _wall_wedge(wall, geo, float(g.uniform(0.15, 0.3)), float(g.uniform()))))
        budget -= n
    info["transient_dropouts"] = [[a, b] for a, b, _, reg in transient if reg is not None]
    # interatrial septum gap (in heart coordinates: it moves with the heart)
    g = fx["ias_gap"]
    has_gap = g.uniform() < p["ias_gap_prob"]
    g_len = _u(g, p["ias_gap_mm"]) / 160.0  # heart units: R of a 16 cm sector
    y_lo = an.gap + float(g.uniform(0.2, 0.6)) * min(an.b_la, an.b_ra)
    gap_y = (y_lo, y_lo + g_len) if has_gap else None
    info["ias_gap_mm"] = round(g_len * 160.0, 2) if has_gap else None

    # ---- speckle
    speckle_rng, noise_rng = fx["speckle"], fx["noise"]
    speckle = v1._Speckle(geo, style, float(p["speckle_rho"]), speckle_rng)

    dr = float(style["dynamic_range_db"])
    # the operator turns the gain down on a hazy (low-contrast) image: ``operator_gain`` dB per dB of contrast
    # below 24 dB
    gain = (float(style["gain_db"]) + float(rng.uniform(-1, 1) * p["gain_jitter_db"])
            - float(p["operator_gain"]) * max(0.0, 24.0 - contrast_db))
    lo_db = float(p["white_db"]) - gain - dr
    scale_db = 255.0 / dr
    noise_std = float(style["noise_std"]) * float(_by_quality(p["noise_scale"], quality))
    floor, blur = float(p["noise_floor"]), float(style["psf_blur_px"])
    scan_blur = tuple(float(x) for x in p["scan_blur_px"])
    text_grey = int(style["text_grey"])
    myo_e, valve_e = float(p["myocardium_echo"]), float(p["valve_echo"])

    annotated: list[int] = []
    if labeled:
        count = int(rng.integers(p["annotated_frames"][0], p["annotated_frames"][1] + 1))
        annotated = v1._choose_annotated(rng, T, count, int(p["annotation_margin"]))
    info["annotated_frames"] = annotated
    # annotator jitter: a smooth displacement field per annotated frame (px at 128² -> units of R)
    # one pixel at 128² (the crop's longer side resized to 128) in heart units
    px_r = max(geo.fan_box[1] - geo.fan_box[0], geo.fan_box[3] - geo.fan_box[2]) / (128.0 * geo.R) / zoom
    jit = float(p["label_jitter_px"]) * px_r
    g = fx["labels"] if not p["annotator"] else fx["labels"].spawn(int(p["annotator"]))[-1]
    # this video's annotator draws every contour a little outside (> 0) or inside (< 0), in native pixels
    bias_128 = float(g.uniform(-1, 1)) * float(p["label_bias_px"])
    bias = bias_128 * px_r * zoom * geo.R  # native pixels
    info["label_bias_px"] = round(bias_128, 3)
    label_warp = {t: (jit * smooth(g, (hb, wb), (4, 4)) / 0.55, jit * smooth(g, (hb, wb), (4, 4)) / 0.55)
                  for t in annotated}
    # half widths of the ventricles at their valve planes, per unit of semi-axis (the annulus points)
    v_base = an.cyc / (1 - an.cyc)
    base_lv, base_rv = ((1 + egg * v_base) * math.sqrt(1 - v_base ** 2) for egg in (an.egg_lv, an.egg_rv))
    video = np.zeros((T, H, W), np.uint8)
    label = np.zeros((T, H, W), np.int8) if labeled else None

    for t in range(T):
        s, op = float(contraction[t]), float(opening[t])
        hx, hy0 = heart_coords(t)
        g = an.frame(hx, hy0, s)
        hy, cav = g["hy"], g["cav"]
        alv, arv, ala, ara = g["alv"], g["arv"], g["ala"], g["ara"]
        lv_c, rv_c = g["lv_c"], g["rv_c"]
        # tissue, pericardium, atrial walls, myocardium
        E = tissue.copy()
        x_lat, x_rvf = lv_c[0] + 1.02 * alv + an.t_lv, rv_c[0] - 1.05 * arv - an.t_rv
        e_env = v1._ellipse2(hx, np.minimum(hy, 0.0), 0.5 * (x_lat + x_rvf), 0.0, 0.5 * (x_lat - x_rvf),
                             g["L"] + an.t_lv, egg=0.45)
        upper = hy < an.gap + 0.01
        w_la, w_ra = (1 + an.t_at / ala) ** 2, (1 + an.t_at / ara) ** 2
        e_la, e_ra = g["e_la"], g["e_ra"]
        peri = ((e_env >= 1) & (e_env < 1.2) & upper) | ((e_la >= w_la) & (e_la < 1.6) & (hy > g["bla"])) | (
            (e_ra >= w_ra) & (e_ra < 1.55) & (hy > g["bra"]))
        E[peri] = (p["pericardium_echo"] * np.clip((hy + 0.25) / 0.4, 0.05, 1.0))[peri]
        atrial = (e_la < w_la) | (e_ra < w_ra)
        E[atrial] = p["atrial_wall_echo"]
        ias = ias_band(g, hx) & atrial
        E[ias] = p["septum_echo"]
        if gap_y is not None:
            E[ias & (hy > gap_y[0]) & (hy < gap_y[1])] = blood_e
        myo = ((e_env < 1) & upper) | (g["e_lv"] < (1 + an.t_lv / alv) ** 2) | (g["e_rv"] < (1 + an.t_rv / arv) ** 2)
        E[myo] = (myo_e * myo_var)[myo]
        # specular reflection: walls whose normal is across the beam return little echo
        cav_all = (cav["lv"] | cav["rv"] | cav["la"] | cav["ra"]).astype(np.float32)
        sm = cv2.GaussianBlur(cav_all, (0, 0), 3.0)
        gx, gy = cv2.Sobel(sm, cv2.CV_32F, 1, 0, ksize=3), cv2.Sobel(sm, cv2.CV_32F, 0, 1, ksize=3)
        gn = np.sqrt(gx * gx + gy * gy)
        facing = np.where(gn > 1e-3, np.abs(gx * ux + gy * uy) / np.maximum(gn, 1e-6), 1.0)
        spec = spec_floor + (1 - spec_floor) * facing
        walls_px = myo | atrial
        E[walls_px] *= spec[walls_px]
        # valves (as v1: a bright line when closed; annulus points and leaflets when open)
        leaflets = v1._valves(E, hx, hy, blood_map, op, an.s_v, an.d_tv, an.gap,
                              (lv_c[0] + base_lv * alv, rv_c[0] - base_rv * arv), valve_e, 1.2 * myo_e)
        cavity = cav_all > 0
        E[cavity] = blood_map[cavity]
        E[leaflets] = valve_e
        E += clutter
        # dropouts (probe coordinates), rib shadow
        if wedge is not None and present[t]:
            (tc, hw, r_lo, r_hi), depth_att = wedge
            E *= 1.0 - depth_att * _wedge_map(geo, tc + jitter[t], hw, r_lo, r_hi)
        for a, b, att, reg in transient:
            if a <= t < b and reg is not None:
                E *= 1.0 - att * _wedge_map(geo, *reg)
        E *= shadow
        env = speckle.next(speckle_rng)
        img = v1._log_image(E, atten, env, lo_db, scale_db, blur)
        img += floor * np.minimum(env, 2.0)
        if scan_blur[0] > 0 or scan_blur[1] > 0:  # scan conversion interpolates between scan lines
            img = cv2.GaussianBlur(img, (0, 0), max(scan_blur[0], 1e-3), sigmaY=max(scan_blur[1], 1e-3))
        img += noise_std * noise_rng.standard_normal((hb, wb), dtype=np.float32)
        v1._compose_frame(video[t], img, geo, overlay, overlay_keep, p, float(times[t]), info, text_grey)
        if label is not None and t in label_warp:
            jx, jy = label_warp[t]
            lab = _label_frame(an, hx + jx, hy0 + jy, s, fan_b)
            if bias:
                lab = _shift_contours(lab, bias, fan_b)
            label[t][geo.box] = lab
            present_cls = set(np.unique(lab).tolist())
            if not {1, 2, 3, 4} <= present_cls:
                raise RuntimeError(f"EchoSynth v2: annotated frame {t} of a {site} video lacks classes "
                                   f"{sorted({1, 2, 3, 4} - present_cls)}; check the geometry parameters")
    return video, label, info
