"""Fan crop (the seed framework's automatic background removal) on hand-made, synthetic and real frames."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from data_schedule.curation.fan_crop import crop_to_bbox, fan_bbox, fan_crop_video, fan_mask
from data_schedule.synthetic.echo_synth import SITE_NAMES, render_video, resolve_params, sector_geometry


def _toy_frame() -> np.ndarray:
    """A ring-shaped 'fan' (dark hole inside), text-like blocks left and right, a faint line below."""
    f = np.zeros((100, 140), np.uint8)
    cv2.circle(f, (70, 45), 30, 120, -1)
    cv2.circle(f, (70, 45), 12, 0, -1)  # dark blood pool inside: filled by the external contour
    f[5:12, 2:20] = 200  # text block left
    f[40:44, 125:138] = 220  # text block right
    f[90:92, 10:130] = 9  # below the threshold: ignored
    return f


def test_toy_frame_box_and_mask():
    f = _toy_frame()
    assert fan_bbox(f) == (15, 76, 40, 101)
    m = fan_mask(f)
    assert m[45, 70] and m.sum() == pytest.approx(np.pi * 30 ** 2, rel=0.03)  # hole filled
    assert not m[5:12, 2:20].any() and not m[40:44, 125:138].any()
    # the threshold is configurable: nothing is above 250
    with pytest.raises(ValueError, match="threshold"):
        fan_bbox(f, threshold=250)


def test_connectivity_and_colour_input():
    f = np.zeros((40, 40), np.uint8)
    f[5:15, 5:15] = 50  # 100 pixels
    f[15:28, 15:28] = 50  # 169 pixels, touching the first one only diagonally
    assert fan_bbox(f) == (5, 28, 5, 28)  # 8-connected: one component
    assert fan_bbox(f, connectivity=4) == (15, 28, 15, 28)  # 4-connected: the larger one
    with pytest.raises(ValueError, match="connectivity"):
        fan_bbox(f, connectivity=6)
    rgb = np.repeat(f[..., None], 3, axis=2)
    assert fan_bbox(rgb) == fan_bbox(f)


def test_empty_frame_raises():
    with pytest.raises(ValueError, match="no pixel above the threshold"):
        fan_bbox(np.zeros((32, 48), np.uint8))
    with pytest.raises(ValueError, match="no pixel above the threshold"):
        fan_bbox(np.full((32, 48, 3), 10, np.uint8))


def test_crop_helpers():
    video = np.zeros((4, 50, 60, 3), np.uint8)
    video[:, 10:30, 20:45] = 90
    label = np.zeros((4, 50, 60), np.int8)
    label[2, 12:20, 25:30] = 1
    v, lab, box = fan_crop_video(video, label)
    assert box == (10, 30, 20, 45) and v.shape == (4, 20, 25, 3) and lab.shape == (4, 20, 25)
    assert lab.sum() == label.sum()
    assert crop_to_bbox(label, box).shape == (4, 20, 25)


@pytest.mark.parametrize("site", [SITE_NAMES[0], SITE_NAMES[3], SITE_NAMES[4]])
def test_synthetic_fan_crop_keeps_fan_drops_text(site):
    over = dict(size_scale=0.6, frames=(16, 16), annotated_frames=(3, 3), annotation_margin=2)
    params, styles = resolve_params(**over)
    video, label, info = render_video(site, np.random.default_rng([7, SITE_NAMES.index(site), 0]), params,
                                      styles[site])
    geo = sector_geometry(site, **over)
    y0, y1, x0, x1 = fan_bbox(video[0])
    gy0, gy1, gx0, gx1 = geo["fan_box"]
    # the box is the sector's box (up to a pixel or two lost to dark far-field corners)
    assert abs(y0 - gy0) <= 3 and abs(y1 - gy1) <= 3 and abs(x0 - gx0) <= 3 and abs(x1 - gx1) <= 3
    inside = np.zeros(video.shape[1:], bool)
    inside[y0:y1, x0:x1] = True
    # every labelled pixel of every annotated frame is inside the box
    for t in info["annotated_frames"]:
        assert not (label[t] > 0)[~inside].any()
    # burned-in text, depth ticks and ECG are bright and outside the box; a naive non-zero box includes them
    assert (video[0][~inside] > 100).sum() > 100
    nz = np.argwhere(video[0] > 10)
    naive = (nz[:, 0].min(), nz[:, 0].max() + 1, nz[:, 1].min(), nz[:, 1].max() + 1)
    assert naive[0] < y0 and naive[1] > y1 and naive[2] < x0 and naive[3] > x1
    # what the box keeps outside the fan is at most the small orientation marker
    assert (video[0][inside & ~geo["mask"]] > 10).sum() < 40


@pytest.fixture(scope="module")
def real_clip() -> np.ndarray:
    """The real apical four-chamber echo cine shipped in the pydicom wheel (30×240×320×3 uint8)."""
    pytest.importorskip("pydicom")
    from pydicom import examples

    try:
        frames = examples.ybr_color.pixel_array
    except Exception as e:  # JPEG decoding needs Pillow (or pylibjpeg / GDCM)
        pytest.skip(f"cannot decode pydicom's ybr_color example (JPEG plugin missing?): {e}")
    assert frames.shape == (30, 240, 320, 3) and frames.dtype == np.uint8
    return frames


def test_real_clip_fan_crop(real_clip):
    """Checked by eye on frame 0: the sector spans roughly x 40-295, y 15-210; scanner text sits at x < 35
    (top left: mode, preset) and x >= 295 (top right: MI/TIS, depth dots); a toolbar fills rows >= 226.
    The fan's far field is dark, so the largest component above grey 10 is the bright central part of the
    sector (the heart) and the box comes out at (27, 202, 92, 225)."""
    frame = real_clip[0]
    y0, y1, x0, x1 = fan_bbox(frame)
    assert 20 <= y0 <= 35 and 195 <= y1 <= 212 and 85 <= x0 <= 100 and 218 <= x1 <= 235
    assert 120 <= x1 - x0 <= 150 and 160 <= y1 - y0 <= 190
    # text columns and the bottom toolbar are excluded (and they do contain bright pixels)
    grey = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
    assert (grey[:60, :35] > 60).sum() > 100 and (grey[:, 295:] > 60).sum() > 100 and (grey[226:] > 60).sum() > 300
    assert x0 > 35 and x1 <= 295 and y1 <= 226
    # the heart is kept: almost all bright echoes of the central sector region are inside the box
    region = np.zeros(grey.shape, bool)
    region[15:215, 40:290] = True
    bright = (grey > 60) & region
    inside = np.zeros(grey.shape, bool)
    inside[y0:y1, x0:x1] = True
    assert (bright & inside).sum() / bright.sum() > 0.95
    # a naive box of all pixels above the threshold would be (nearly) the whole image
    nz = np.argwhere(grey > 10)
    assert nz[:, 1].min() < 10 and nz[:, 1].max() > 310 and nz[:, 0].max() > 230
    # cropping the whole clip with the first frame's box
    v, _, box = fan_crop_video(real_clip)
    assert box == (y0, y1, x0, x1) and v.shape == (30, y1 - y0, x1 - x0, 3)
