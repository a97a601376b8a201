"""Realism measures of an echo video inside its ultrasound fan: grey histogram, speckle size, temporal coherence.

The measuring instrument for calibrating EchoSynth against the one real apical four-chamber clip available
offline (``pydicom.examples.ybr_color``, 30×240×320×3): the same functions are applied to the real clip and to
generated videos, and :func:`check_targets` compares a generator's measures with the acceptance ranges
:data:`TARGETS`. Everything is measured on a grey ``T×H×W`` uint8 video inside its fan
(:func:`fan_mask`); colour clips are converted with :func:`grey_video` (the RGB mean, as in the reference).

>>> video = grey_video(load_reference_clip())          # T×H×W uint8
>>> m = measure(video)                                 # {"fan_fraction": 0.25, "p50": 20.0, ...}
>>> check_targets(m)["p50"]                            # (value, low, high, ok)

Definition choices (each changes a number, so they are fixed here and documented):

* grey: RGB mean rounded to the nearest integer. On the reference clip truncation or cv2's luma weighting give
  the same numbers to 0.001 (its pixels are almost all grey).
* fan: ``grey > 10`` on the max projection over time, largest 8-connected component, holes filled
  (:func:`data_schedule.curation.fan_crop.fan_mask` applied to the max projection).
* percentiles: numpy's default (linear interpolation) over the in-fan pixels of all frames.
* speckle: high-pass = frame minus a Gaussian blur of sigma :data:`SPECKLE_HIGHPASS_SIGMA` = 4 px, the blur
  normalised within the fan (``blur(f·m) / blur(m)``) so the black outside does not make an edge at the fan
  border; autocorrelation of the in-fan high-pass (outside set to 0) by FFT, divided by the autocorrelation of
  the mask (mean product over the pixel pairs that are both in the fan) and by its value at lag 0. The length
  is the lag where the profile first falls below 0.5, **linearly interpolated** (3.3 px in x, 1.7 px in y on
  the reference clip). The published 4 px / 2 px are exactly the first *integer* lag below 0.5 (every frame
  of the reference clip gives 4 and 2 with this high-pass), i.e. ``interpolate=False``. The length grows with
  the high-pass sigma (reference clip, interpolated, x/y: sigma 2: 2.2/1.0, 3: 2.8/1.4, 4: 3.3/1.7,
  6: 4.3/2.8, 8: 5.2/4.0), so compare only numbers measured with the same sigma.
"""
from __future__ import annotations

import math
import warnings
from typing import Mapping

import numpy as np
from scipy import fft as sfft
from scipy import ndimage

from data_schedule.curation.fan_crop import fan_mask as _frame_fan_mask

__all__ = [
    "FAN_THRESHOLD",
    "SPECKLE_HIGHPASS_SIGMA",
    "REFERENCE",
    "TARGETS",
    "grey_video",
    "load_reference_clip",
    "fan_mask",
    "grey_percentiles",
    "dark_fraction",
    "autocorrelation",
    "speckle_correlation_length",
    "frame_to_frame_correlation",
    "measure",
    "check_targets",
]

FAN_THRESHOLD = 10
#: sigma (px) of the Gaussian blur subtracted before the speckle autocorrelation: well above the speckle grain
#: of the reference clip (2-4 px) so the grain survives, well below the size of walls and cavities.
SPECKLE_HIGHPASS_SIGMA = 4.0
#: lags searched for the 0.5 crossing; a profile that stays above 0.5 up to here gives NaN for that frame.
MAX_LAG = 32

#: the reference clip's published measurements (the team's reference implementation)
REFERENCE: dict[str, float] = dict(fan_fraction=0.25, p10=3, p50=20, p90=71, p99=121, dark_fraction=0.50,
                                   corr_x=4, corr_y=2, frame_to_frame=0.95)

#: acceptance ranges (inclusive) the v2 generator must meet, per measure
TARGETS: dict[str, tuple[float, float]] = {
    "p50": (20 - 6, 20 + 6),
    "p90": (71 - 15, 71 + 15),
    "p99": (121 - 25, 121 + 25),
    "dark_fraction": (0.40, 0.60),
    "corr_x": (3.0, 5.0),
    "corr_y": (1.5, 3.0),
    "frame_to_frame": (0.92, 0.97),
}


def grey_video(video: np.ndarray) -> np.ndarray:
    """``T×H×W`` uint8 grey video from ``T×H×W`` or ``T×H×W×C`` (C = 1, 3 or 4: the mean of the first three
    channels, rounded; an alpha channel is ignored)."""
    video = np.asarray(video)
    if video.ndim == 4:
        if video.shape[-1] == 1:
            video = video[..., 0]
        elif video.shape[-1] in (3, 4):
            # float mean of the colour channels, then round: the reference's "grey = RGB mean"
            video = np.rint(video[..., :3].astype(np.float32).mean(axis=-1))
        else:
            raise ValueError(f"expected T×H×W×{{1,3,4}}, got shape {video.shape}")
    if video.ndim != 3:
        raise ValueError(f"expected a video of shape T×H×W or T×H×W×C, got shape {video.shape}")
    return video if video.dtype == np.uint8 else np.clip(video, 0, 255).astype(np.uint8)


def load_reference_clip() -> np.ndarray:
    """The real A4C cine shipped in the pydicom wheel, ``30×240×320×3`` uint8 RGB.

    Raises ``ImportError`` without pydicom and whatever pydicom raises when it cannot decode the JPEG frames
    (no Pillow / pylibjpeg / GDCM)."""
    from pydicom import examples

    return np.asarray(examples.ybr_color.pixel_array)


def _check_video(video: np.ndarray) -> np.ndarray:
    video = np.asarray(video)
    if video.ndim != 3:
        raise ValueError(f"expected a grey video of shape T×H×W, got shape {video.shape} "
                         f"(convert colour with grey_video)")
    return video


def _check_fan(video: np.ndarray, fan: np.ndarray) -> np.ndarray:
    fan = np.asarray(fan, dtype=bool)
    if fan.shape != video.shape[1:]:
        raise ValueError(f"fan mask shape {fan.shape} does not match the frames' {video.shape[1:]}")
    if not fan.any():
        raise ValueError("the fan mask is empty")
    return fan


def fan_mask(video: np.ndarray, threshold: float = FAN_THRESHOLD) -> np.ndarray:
    """``H×W`` bool fan of a ``T×H×W`` grey video: ``> threshold`` on the max projection over time, largest
    8-connected component, holes filled. Raises ``ValueError`` if no pixel is above the threshold."""
    video = _check_video(video)
    # max projection: a pixel belongs to the sector if it is ever echogenic (cavities flash with blood clutter,
    # dropouts and the moving heart change single frames, the sector itself does not move)
    return _frame_fan_mask(video.max(axis=0), threshold=threshold)


def grey_percentiles(video: np.ndarray, fan: np.ndarray) -> dict[str, float]:
    """``{p10, p50, p90, p99}`` of the in-fan grey values over all frames (``video`` T×H×W, ``fan`` H×W)."""
    video = _check_video(video)
    values = video[:, _check_fan(video, fan)]
    q = np.percentile(values, [10, 50, 90, 99])
    return {f"p{k}": float(v) for k, v in zip((10, 50, 90, 99), q)}


def dark_fraction(video: np.ndarray, fan: np.ndarray, level: float = 20) -> float:
    """Fraction of the in-fan pixels (all frames of the ``T×H×W`` video) with grey strictly below ``level``."""
    video = _check_video(video)
    return float((video[:, _check_fan(video, fan)] < level).mean())


def _fft_shape(h: int, w: int, max_lag: int) -> tuple[int, int]:
    # zero padding by max_lag makes the circular correlation equal the linear one for |lag| <= max_lag
    return sfft.next_fast_len(h + max_lag, real=True), sfft.next_fast_len(w + max_lag, real=True)


def _raw_autocorr(x: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    spec = sfft.rfft2(x, s=shape)
    return sfft.irfft2(spec * np.conj(spec), s=shape)


def autocorrelation(image: np.ndarray, mask: np.ndarray, max_lag: int = MAX_LAG) -> np.ndarray:
    """Normalised autocorrelation of ``image`` (H×W float) over the pixels of ``mask`` (H×W bool).

    Returns ``(2·max_lag+1)×(2·max_lag+1)``, lag (0, 0) in the centre, rows = lag in y, columns = lag in x:
    the mean product of in-mask pixel pairs at that lag (in-mask mean removed) divided by the in-mask variance,
    so 1 at lag 0. Lags with no in-mask pair are NaN.
    """
    mask = np.asarray(mask, dtype=bool)
    x = np.where(mask, np.asarray(image, np.float64), 0.0)
    x[mask] -= x[mask].mean()
    shape = _fft_shape(*x.shape, max_lag)
    num = _raw_autocorr(x, shape)
    pairs = _raw_autocorr(mask.astype(np.float64), shape)
    with np.errstate(invalid="ignore", divide="ignore"):
        # FFT round-off leaves ~1e-12 instead of 0 pairs at unreachable lags
        c = np.where(pairs > 0.5, num / np.maximum(pairs, 0.5), np.nan)
    lags = np.r_[-max_lag:max_lag + 1]
    c = c[np.ix_(lags % shape[0], lags % shape[1])]
    c0 = c[max_lag, max_lag]
    return c / c0 if c0 > 0 else np.full_like(c, np.nan)


def _first_crossing(profile: np.ndarray, level: float = 0.5, interpolate: bool = True) -> float:
    """Lag (profile index, linearly interpolated, or the first integer lag with ``interpolate=False``) where
    ``profile`` (1 at index 0) first falls below ``level``; NaN if it never does."""
    below = np.flatnonzero(profile < level)
    if below.size == 0 or below[0] == 0:
        return math.nan
    k = int(below[0])
    a, b = float(profile[k - 1]), float(profile[k])
    if not np.isfinite(a):  # a lag without in-fan pairs before the crossing (a fan only a few px wide)
        return math.nan
    return float(k) if not interpolate else (k - 1) + (a - level) / (a - b)


def speckle_correlation_length(video: np.ndarray, fan: np.ndarray, sigma: float = SPECKLE_HIGHPASS_SIGMA,
                               max_lag: int = MAX_LAG, interpolate: bool = True) -> tuple[float, float]:
    """``(lx, ly)``: speckle correlation length in px along x (lateral) and y (axial, rows), averaged over
    frames.

    Per frame of the ``T×H×W`` video: high-pass inside the ``H×W`` fan (frame minus its Gaussian blur of
    ``sigma`` px, normalised within the fan), :func:`autocorrelation` over the fan, and the lag where its
    profile along +x (resp. +y) first falls below 0.5, linearly interpolated between integer lags (the first
    integer lag below 0.5 with ``interpolate=False``, the published reference numbers). Frames whose
    high-pass is zero (constant frames) or whose profile never falls below 0.5 within ``max_lag`` are left out
    of the mean (NaN if all are).
    """
    video = _check_video(video)
    fan = _check_fan(video, fan)
    m = fan.astype(np.float64)
    # normalised convolution: the blur of the in-fan pixels only, so the fan border is no edge
    m_blur = ndimage.gaussian_filter(m, sigma, mode="constant")
    lx, ly = [], []
    for frame in video:
        f = np.where(fan, frame.astype(np.float64), 0.0)
        with np.errstate(invalid="ignore", divide="ignore"):
            low = ndimage.gaussian_filter(f, sigma, mode="constant") / m_blur
        hp = np.where(fan, f - low, 0.0)
        if not np.any(np.abs(hp[fan] - hp[fan].mean()) > 1e-9):
            continue
        ac = autocorrelation(hp, fan, max_lag)
        lx.append(_first_crossing(ac[max_lag, max_lag:], interpolate=interpolate))
        ly.append(_first_crossing(ac[max_lag:, max_lag], interpolate=interpolate))
    with warnings.catch_warnings():  # all-NaN gives NaN, as documented, without numpy's warning
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(np.nanmean(lx)) if lx else math.nan, float(np.nanmean(ly)) if ly else math.nan


def frame_to_frame_correlation(video: np.ndarray, fan: np.ndarray) -> float:
    """Mean Pearson correlation between the in-fan pixels of consecutive frames of the ``T×H×W`` video
    (``fan`` H×W). Pairs where a frame is constant inside the fan are left out; NaN if no pair is left or
    ``T < 2``."""
    video = _check_video(video)
    x = video[:, _check_fan(video, fan)].astype(np.float64)  # T×N
    if len(x) < 2:
        return math.nan
    x -= x.mean(axis=1, keepdims=True)
    norm = np.sqrt((x * x).sum(axis=1))
    num = (x[:-1] * x[1:]).sum(axis=1)
    den = norm[:-1] * norm[1:]
    ok = den > 0
    return float((num[ok] / den[ok]).mean()) if ok.any() else math.nan


def measure(video: np.ndarray, fan: np.ndarray | None = None) -> dict[str, float]:
    """All measures of a ``T×H×W`` grey (or ``T×H×W×3`` RGB, converted with :func:`grey_video`) video:
    ``fan_fraction`` (share of the frame inside the fan), ``p10 p50 p90 p99``, ``dark_fraction``, ``corr_x``,
    ``corr_y``, ``frame_to_frame``. ``fan`` (H×W bool) defaults to :func:`fan_mask` of the video."""
    video = grey_video(video)
    fan = fan_mask(video) if fan is None else _check_fan(video, fan)
    out = {"fan_fraction": float(fan.mean())}
    out.update(grey_percentiles(video, fan))
    out["dark_fraction"] = dark_fraction(video, fan)
    out["corr_x"], out["corr_y"] = speckle_correlation_length(video, fan)
    out["frame_to_frame"] = frame_to_frame_correlation(video, fan)
    return out


def check_targets(measures: Mapping[str, float], targets: Mapping[str, tuple[float, float]] | None = None
                  ) -> dict[str, tuple[float, float, float, bool]]:
    """``{name: (value, low, high, ok)}`` for every target (default :data:`TARGETS`); ``ok`` is
    ``low <= value <= high`` (False for NaN). A measure missing from ``measures`` raises ``KeyError``."""
    targets = TARGETS if targets is None else targets
    out = {}
    for name, (low, high) in targets.items():
        if name not in measures:
            raise KeyError(f"no measure {name!r} (have {sorted(measures)})")
        v = float(measures[name])
        out[name] = (v, float(low), float(high), bool(low <= v <= high))
    return out
