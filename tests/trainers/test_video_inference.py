"""Whole-video inference in temporal windows (trainers/video_inference.py)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import models  # noqa: F401  (registers UNetBaseline)
from core.registry import MODELS
from trainers.video_inference import iter_video_probs, predict_video, windows


# ---------------------------------------------------------------- windows()

def test_windows_regular_and_shifted_last_window():
    assert windows(40, 8, 0) == [(s, s + 8) for s in range(0, 40, 8)]
    # stride 5: 0, 5, ..., 30 fit; the last window is shifted back to end at frame 40 (keeps 8 frames)
    assert windows(40, 8, 3) == [(s, s + 8) for s in range(0, 31, 5)] + [(32, 40)]
    assert windows(10, 4, 3) == [(s, s + 4) for s in range(7)]  # overlap = window - 1: stride 1
    assert windows(5, 8, 2) == [(0, 5)]  # T < window: one short window
    assert windows(8, 8, 7) == [(0, 8)]  # T == window
    assert windows(1, 1, 0) == [(0, 1)]
    assert windows(0, 4, 1) == []


@pytest.mark.parametrize("window", [1, 2, 3, 5, 8])
def test_windows_cover_every_frame_with_the_requested_overlap(window):
    for overlap in range(window):
        stride = window - overlap
        for t in range(1, 30):
            wins = windows(t, window, overlap)
            covered = np.zeros(t, dtype=int)
            for s, e in wins:
                assert 0 <= s < e <= t and e - s == min(window, t)
                covered[s:e] += 1
            assert covered.min() >= 1, (t, window, overlap)
            assert wins[0][0] == 0 and wins[-1][1] == t
            starts = [s for s, _ in wins]
            assert starts == sorted(set(starts))  # strictly increasing
            steps = np.diff(starts)
            assert (steps[:-1] == stride).all() and (steps <= stride).all()  # only the last step may be shorter
            for (s0, e0), (s1, _) in zip(wins, wins[1:]):
                assert e0 - s1 >= overlap  # consecutive windows share at least `overlap` frames


@pytest.mark.parametrize("args", [(10, 0, 0), (10, -1, 0), (10, 4, 4), (10, 4, 5), (10, 4, -1), (-1, 4, 0),
                                  (10, 2.5, 0), (10, 4, True)])
def test_windows_bad_args_raise(args):
    with pytest.raises(ValueError):
        windows(*args)


# ---------------------------------------------------------------- per-frame model: windows == one pass

@pytest.fixture(scope="module")
def unet():
    torch.manual_seed(0)
    return MODELS.get("UNetBaseline")(decoder_channels=[16, 16, 8, 8, 8], norm="group").eval()


@pytest.fixture(scope="module")
def video():
    return np.random.default_rng(0).integers(0, 256, size=(40, 50, 60), dtype=np.uint8)


@pytest.fixture(scope="module")
def one_pass(unet, video):
    return predict_video(unet, video, size=(64, 64), window=len(video))


@pytest.mark.parametrize("overlap", [0, 3])
def test_windows_equal_one_pass_for_a_per_frame_model(unet, video, one_pass, overlap):
    assert one_pass.shape == video.shape and one_pass.dtype == np.uint8
    assert len(np.unique(one_pass)) > 1  # not a trivial all-background prediction
    out = predict_video(unet, video, size=(64, 64), window=8, overlap=overlap, num_classes=4)
    np.testing.assert_array_equal(out, one_pass)


def test_memmap_input_gives_the_same_labels(unet, video, one_pass, tmp_path):
    np.save(tmp_path / "video.npy", video)
    mm = np.load(tmp_path / "video.npy", mmap_mode="r")
    np.testing.assert_array_equal(predict_video(unet, mm, size=(64, 64), window=8, overlap=3), one_pass)
    assert not mm.flags.writeable  # read-only memmap works (only window slices are copied)


def test_out_size_and_model_mode_restored(unet, video):
    unet.train()
    try:
        out = predict_video(unet, torch.from_numpy(video[:10]), size=(64, 64), window=4, overlap=1,
                            out_size=(32, 24))
        assert out.shape == (10, 32, 24) and out.max() <= 4
        assert unet.training  # eval for the call, restored after
    finally:
        unet.eval()


# ---------------------------------------------------------------- temporal model: overlap averaging

class TemporalMean(nn.Module):
    """One class; every frame of a window gets the window's temporal mean intensity as its probability."""

    def __init__(self):
        super().__init__()
        self.seen: list[list[int]] = []

    def predict(self, batch):
        self.seen.append(batch["frame_idx"][0].tolist())
        v = batch["video"][:, :, :1]  # B×t×1×h×w
        return {"probs": v.mean(1, keepdim=True).expand_as(v)}


def test_overlap_frames_get_the_mean_of_their_windows():
    # frames of constant grey 255, 51, 51 (= 1.0, 0.2, 0.2) in pairs; window 4, overlap 2 -> (0, 4), (2, 6)
    grey = np.array([255, 255, 51, 51, 51, 51], dtype=np.uint8)
    frames = np.broadcast_to(grey[:, None, None], (6, 12, 16)).copy()
    model = TemporalMean()
    chunks = list(iter_video_probs(model, frames, size=(8, 8), window=4, overlap=2))
    assert model.seen == [[0, 1, 2, 3], [2, 3, 4, 5]]
    assert [s for s, _ in chunks] == [0, 2]
    probs = torch.cat([p for _, p in chunks])[:, 0, 0, 0]  # per-frame probability (spatially constant)
    # window means 0.6 (frames 0-3) and 0.2 (frames 2-5); frames 2, 3 are in both: (0.6 + 0.2) / 2 = 0.4
    torch.testing.assert_close(probs, torch.tensor([0.6, 0.6, 0.4, 0.4, 0.2, 0.2]), rtol=0, atol=1e-6)
    labels = predict_video(TemporalMean(), frames, size=(8, 8), window=4, overlap=2)
    # foreground where p > 0.5: frames 2, 3 are background although their first window alone says 0.6
    np.testing.assert_array_equal(labels[:, 0, 0], [1, 1, 0, 0, 0, 0])
    assert (labels == labels[:, :1, :1]).all()


def test_frames_in_three_windows_average_all_three():
    rng = np.random.default_rng(1)
    t, window, overlap = 11, 4, 2  # windows (0,4) (2,6) (4,8) (6,10) and the shifted (7,11): frame 7 is in three
    grey = rng.integers(0, 256, size=t).astype(np.uint8)
    frames = np.broadcast_to(grey[:, None, None], (t, 10, 10)).copy()
    model = TemporalMean()
    probs = torch.cat([p for _, p in iter_video_probs(model, frames, (10, 10), window, overlap)])[:, 0, 0, 0]
    wins = windows(t, window, overlap)
    assert model.seen == [list(range(s, e)) for s, e in wins]
    x = grey / 255.0
    expected = [np.mean([x[s:e].mean() for s, e in wins if s <= f < e]) for f in range(t)]
    assert sum(s <= 7 < e for s, e in wins) == 3
    torch.testing.assert_close(probs, torch.tensor(expected, dtype=torch.float32), rtol=0, atol=1e-6)


def test_predict_video_rejects_bad_input():
    model = TemporalMean()
    frames = np.zeros((5, 8, 8), dtype=np.uint8)
    with pytest.raises(ValueError, match="uint8"):
        predict_video(model, frames.astype(np.float32), (8, 8), window=4)
    with pytest.raises(ValueError, match="T×H×W"):
        predict_video(model, frames[0], (8, 8), window=4)
    with pytest.raises(ValueError, match="overlap"):
        predict_video(model, frames, (8, 8), window=4, overlap=4)
    with pytest.raises(ValueError, match="num_classes"):
        predict_video(model, frames, (8, 8), window=4, num_classes=4)
    with pytest.raises(ValueError, match="size"):
        predict_video(model, frames, (8, 0), window=4)
