"""Mapper transforms (data_schedule/transforms.py): an intensity window turns CT values into the uint8 the clip
mappers take, RGB to grey, the fan crop decided once per video on its first frame, labels transformed alike, and
unknown names suggest the closest; no transforms leaves a sample bit-identical; resize (spacing follows) and the
inverses that put a prediction back on the input's geometry; a register's default transforms apply only while the
mapper sets none."""
import numpy as np
import pytest
import torch

from core.errors import ConfigError
from data_schedule.mappers.clip_mapper import ClipEvalMapper
from data_schedule.transforms import FanCrop, IntensityWindow, Resize, ToGrey, ToRGB


class ArrayCache:
    def __init__(self, frames, labels):
        self.frames, self._labels = frames, labels

    def image(self):
        return self.frames

    def labels(self):
        return self._labels


def _meta(frames, labels, video_id="v/1"):
    return dict(video_id=video_id, frame_idx=1, num_frames=len(frames), labeled=True,
                cache=ArrayCache(frames, labels), sample_id=0)


def test_intensity_window_maps_a_ct_range_to_uint8_and_the_mapper_accepts_it():
    hu = np.array([[[-1000, -160, 40], [240, 1000, 0]]] * 3, np.int16)  # 3 frames of 2×3 HU values
    out, _ = IntensityWindow(-160, 240)(hu, np.zeros((3, 2, 3), np.int64), {})
    assert out.dtype == np.uint8 and out[0].tolist() == [[0, 0, 128], [255, 255, 102]]
    lab = {1: np.array([[0, 1, 1], [0, 0, 1]])}
    with pytest.raises(Exception, match="add an IntensityWindow transform"):
        ClipEvalMapper(clip_len=3, size=[2, 3], num_classes=1)(_meta(hu, lab))
    s = ClipEvalMapper(clip_len=3, size=[2, 3], num_classes=1,
                       transforms=[dict(name="IntensityWindow", low=-160, high=240)])(_meta(hu, lab))
    assert torch.allclose(s["video"][1, 0], torch.from_numpy(out[1]).float() / 255)
    assert torch.equal(s["gt_full"][0], torch.from_numpy(lab[1]))
    with pytest.raises(ConfigError, match="high .* must be above low"):
        IntensityWindow(10, 10)


def test_to_grey_and_unknown_transform_names():
    rgb = np.zeros((2, 4, 4, 3), np.uint8)
    rgb[..., 0] = 100
    grey, _ = ToGrey()(rgb, None, {})
    assert grey.shape == (2, 4, 4) and int(grey[0, 0, 0]) == 30  # 0.299 · 100
    assert ToGrey()(grey, None, {})[0] is grey
    with pytest.raises(Exception, match="IntensityWindow"):
        ClipEvalMapper(clip_len=3, size=[4, 4], transforms=[dict(name="IntensityWindo", low=0, high=1)])


def test_fan_crop_is_decided_on_the_first_frame_and_applied_to_frames_and_labels():
    frames = np.zeros((4, 20, 30), np.uint8)
    frames[:, 5:15, 8:25] = 120  # the "fan"
    frames[2:, 0:3, 0:3] = 200  # text in a later frame: not part of the first frame's fan
    labels = np.zeros((4, 20, 30), np.int64)
    labels[:, 6:9, 10:12] = 1
    crop = FanCrop()
    f, lab = crop(frames, labels, _meta(frames, {}))
    assert f.shape == (4, 10, 17) and lab.shape == (4, 10, 17) and lab.sum() == 4 * 6
    f2, _ = crop(frames[2:], labels[2:], _meta(frames, {}))  # another clip of the same video: the same box
    assert f2.shape == (2, 10, 17)
    plain = ClipEvalMapper(clip_len=3, size=[20, 30], num_classes=1)(_meta(frames, {1: labels[1]}))
    again = ClipEvalMapper(clip_len=3, size=[20, 30], num_classes=1, transforms=[])(_meta(frames, {1: labels[1]}))
    assert torch.equal(plain["video"], again["video"]) and torch.equal(plain["gt_full"], again["gt_full"])


def test_register_default_transforms_apply_only_while_the_mapper_sets_none():
    frames = np.zeros((4, 20, 30), np.uint8)
    frames[:, 5:15, 8:25] = 120
    meta = {**_meta(frames, {}), "default_transforms": ({"name": "FanCrop"},)}
    unset = ClipEvalMapper(clip_len=3, size=[10, 17], num_classes=1)(meta)
    explicit = ClipEvalMapper(clip_len=3, size=[10, 17], num_classes=1, transforms=[dict(name="FanCrop")])(meta)
    none = ClipEvalMapper(clip_len=3, size=[10, 17], num_classes=1, transforms=[])(meta)
    assert unset["gt_full"].shape == explicit["gt_full"].shape == (1, 10, 17) and none["gt_full"].shape == (1, 20, 30)
    assert torch.equal(unset["video"], explicit["video"]) and not torch.equal(unset["video"], none["video"])
    assert torch.equal(unset["video"][0, 0], torch.full((10, 17), 120 / 255))  # all fan, no border


def test_resize_scales_spacing_and_inverts_labels():
    frames = np.arange(4 * 8 * 12, dtype=np.uint8).reshape(4, 8, 12)
    labels = np.zeros((4, 8, 12), np.int64)
    labels[:, :4, :6] = 2
    meta = {"spacing": [0.5, 0.25]}
    f, lab = Resize([4, 6])(frames, labels, meta)
    assert f.shape == (4, 4, 6) and f.dtype == np.uint8 and lab.dtype == np.int64
    assert lab[:, :2, :3].tolist() == [[[2] * 3] * 2] * 4 and lab[:, 2:].sum() == 0 and lab[:, :, 3:].sum() == 0
    assert int(f[0, 0, 0]) == int(frames[0, :2, :2].mean() + 0.5)  # area average of the 2×2 block (6.5 -> 7)
    assert meta["spacing"] == [1.0, 0.5]  # a pixel twice as large, in mm
    back = Resize([4, 6]).invert_labels(lab, {}, (8, 12))
    assert back.shape == (4, 8, 12) and np.array_equal(back, labels)
    same = np.zeros((2, 4, 6), np.uint8)
    assert Resize([4, 6])(same, same, {})[0] is same
    with pytest.raises(ConfigError, match=r"Resize: size must be \[H, W\]"):
        Resize([4])


def test_to_rgb_and_the_fan_crop_inverse():
    grey = np.full((2, 3, 4), 7, np.uint8)
    rgb, _ = ToRGB()(grey, None, {})
    assert rgb.shape == (2, 3, 4, 3) and (rgb == 7).all() and ToRGB()(rgb, None, {})[0] is rgb
    assert np.array_equal(ToGrey()(rgb, None, {})[0], grey)  # grey -> RGB -> grey is lossless
    frames = np.zeros((2, 20, 30), np.uint8)
    frames[:, 5:15, 8:25] = 120
    crop, meta = FanCrop(), _meta(frames, {})
    pred = np.ones((2, 10, 17), np.uint8)
    full = crop.invert_labels(pred, meta, (20, 30))
    assert full.shape == (2, 20, 30) and full.sum() == 2 * 10 * 17 and full[:, 5:15, 8:25].all()
