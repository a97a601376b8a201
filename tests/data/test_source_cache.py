"""data_schedule/sources/cache.py: any VideoSource decoded once and memory-mapped after, re-decoded when its file
changes; LazyVideo decodes nothing until used and checks the index; the clip mappers read RGB and grey caches."""
import pickle

import numpy as np
import pytest
import torch

from data_schedule.sources.base import VideoRecord, file_key
from data_schedule.sources.cache import LazyVideo, cache_source
from data_schedule.sources.nifti import DataError


class CountingSource:
    """A source over one .npy file that counts its decodes."""

    def __init__(self, path, labels=None, channels=0):
        self.path, self.labels, self.channels, self.reads = path, labels or {}, channels, 0

    def read(self) -> VideoRecord:
        self.reads += 1
        return VideoRecord(np.load(self.path), dict(self.labels), spacing=(0.3, 0.2), fps=25.0,
                           source=str(self.path))

    def key(self) -> str:
        return file_key(self.path)

    @property
    def where(self) -> str:
        return str(self.path)


def _video(tmp_path, t=5, h=6, w=8, channels=0, name="v.npy"):
    shape = (t, h, w, channels) if channels else (t, h, w)
    arr = (np.arange(np.prod(shape)) % 251).astype(np.uint8).reshape(shape)
    np.save(tmp_path / name, arr)
    return tmp_path / name, arr


def test_decoded_once_memory_mapped_after_and_again_when_the_file_changes(tmp_path):
    path, arr = _video(tmp_path)
    empty = np.zeros((6, 8), np.int64)  # an annotated frame may be all background
    lab = np.zeros((6, 8), np.int64)
    lab[1:3, 2:5] = 2
    src = CountingSource(path, {1: lab, 3: empty})
    rec = cache_source(src, num_classes=3, cache_root=tmp_path / "cache")
    again = cache_source(src, num_classes=3, cache_root=tmp_path / "cache")
    assert src.reads == 1 and again == rec
    assert isinstance(rec.image(), np.memmap) and np.array_equal(rec.image(), arr)
    assert rec.annotated_frames == [1, 3] and rec.spacing == [0.3, 0.2] and rec.fps == 25.0
    assert np.array_equal(rec.labels()[1], lab) and not rec.labels()[3].any() and rec.labels()[1].dtype == np.int8
    np.save(path, arr[::-1].copy())  # edited file: new size/mtime -> decoded again
    redone = cache_source(src, num_classes=3, cache_root=tmp_path / "cache")
    assert src.reads == 2 and np.array_equal(redone.image(), arr[::-1])


def test_invalid_labels_are_a_data_error_and_nothing_is_cached(tmp_path):
    path, _ = _video(tmp_path)
    bad = CountingSource(path, {0: np.full((6, 8), 7)})
    with pytest.raises(DataError, match=r"holds values 7..7, expected 0..3"):
        cache_source(bad, num_classes=3, cache_root=tmp_path / "cache")
    assert not list((tmp_path / "cache").rglob("info.json"))


def test_lazy_video_decodes_on_first_use_checks_the_index_and_pickles_without_the_record(tmp_path):
    path, arr = _video(tmp_path)
    src = CountingSource(path, {2: np.ones((6, 8), np.int64)})
    lazy = LazyVideo(src, 1, num_frames=5, annotated_frames=[2], cache_root=tmp_path / "c")
    assert src.reads == 0 and lazy.num_frames == 5
    assert np.array_equal(lazy.image(), arr) and list(lazy.labels()) == [2] and src.reads == 1
    clone = pickle.loads(pickle.dumps(lazy))  # what a loader worker gets
    assert clone._record is None and np.array_equal(clone.image(), arr)
    wrong = LazyVideo(CountingSource(path), 1, num_frames=9, cache_root=tmp_path / "c")
    with pytest.raises(DataError, match="5 frames decoded, the dataset index says 9"):
        wrong.image()
    wrong = LazyVideo(CountingSource(path), 1, annotated_frames=[0], cache_root=tmp_path / "c2")
    with pytest.raises(DataError, match=r"annotated frames \[\], the dataset index says \[0\]"):
        wrong.labels()


@pytest.mark.parametrize("channels", [0, 3])
def test_clip_mappers_read_grey_and_rgb_caches(tmp_path, channels):
    from data_schedule.mappers.clip_mapper import ClipEvalMapper

    path, arr = _video(tmp_path, t=9, h=12, w=16, channels=channels)
    lab = np.zeros((12, 16), np.int64)
    lab[2:6, 3:9] = 1
    lazy = LazyVideo(CountingSource(path, {4: lab}), 2, cache_root=tmp_path / "c")
    meta = dict(video_id="case/1", frame_idx=4, num_frames=9, annotated_frames=[4], labeled=True, cache=lazy,
                sample_id=0)
    s = ClipEvalMapper(clip_len=5, size=[12, 16], num_classes=2)(meta)
    assert s["video"].shape == (5, 3, 12, 16) and s["scored"].tolist() == [False, False, True, False, False]
    want = torch.from_numpy(arr[4].astype(np.float32) / 255)
    want = want[None].expand(3, -1, -1) if channels == 0 else want.permute(2, 0, 1)
    torch.testing.assert_close(s["video"][2], want)
    assert torch.equal(s["gt_full"][0], torch.from_numpy(lab)) and s["masks"][2, 0].sum() == 24
    assert s["meta"]["site"] == ""


def test_clip_mappers_refuse_frames_that_are_not_uint8(tmp_path):
    from data_schedule.mappers.clip_mapper import ClipEvalMapper

    np.save(tmp_path / "f.npy", np.zeros((4, 6, 6), np.int16))
    lazy = LazyVideo(CountingSource(tmp_path / "f.npy"), 1, cache_root=tmp_path / "c")
    meta = dict(video_id="ct/1", frame_idx=0, num_frames=4, labeled=False, cache=lazy, sample_id=0)
    with pytest.raises(DataError, match="ct/1: frames are int16; the clip mappers take uint8 frames"):
        ClipEvalMapper(clip_len=3, size=[6, 6], num_classes=1)(meta)


def test_a_training_sample_that_cannot_be_read_names_the_source_file(tmp_path):
    from data_schedule.build import MappedDataset
    from data_schedule.mappers.clip_mapper import ClipTrainMapper

    path, _ = _video(tmp_path)
    lazy = LazyVideo(CountingSource(path), 1, num_frames=9, cache_root=tmp_path / "c")  # the index is wrong
    meta = dict(video_id="case1", frame_idx=0, num_frames=9, sample_id=0, cache=lazy)
    ds = MappedDataset([meta], ClipTrainMapper(clip_len=3, size=[6, 8], num_classes=1))
    with pytest.raises(DataError, match=rf"training sample case1 frame 0 \({path}\): .*5 frames decoded"):
        ds[(0, 0)]
