"""The optional stateful video API of the model protocol (``init_video`` / ``add_prompts`` / ``propagate``):
whole-video evaluation and ``predict_video`` dispatch to it when a model has it, prompts reach the frames that
carry them, frames before the first prompt are filled by the reverse pass, and required prompts are checked."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from core.errors import ConfigError
from evaluators.metrics import probs_to_labels
from models.base import MetaArch
from trainers.evaluation import inference_on_dataset
from trainers.video_inference import predict_video, predict_with_video_api


class MemoryModel(MetaArch):
    """Each frame's probability is the running mean of the frames seen so far in the propagation order (a memory
    over the video that windowed ``predict`` could not reproduce); prompts are recorded per frame."""

    requires = frozenset({"prompts"})
    trains = False

    def predict(self, batch):
        raise AssertionError("a model with the video API is evaluated through it")

    def init_video(self, video, meta):
        return {"video": video, "prompts": {}, "meta": meta}

    def add_prompts(self, state, frame_idx, prompts):
        state["prompts"][frame_idx] = prompts

    def propagate(self, state, reverse=False):
        v = state["video"][:, :1]  # T×1×H×W
        start = min(state["prompts"], default=0)
        order = range(start - 1, -1, -1) if reverse else range(start, v.shape[0])
        seen = []
        for t in order:
            seen.append(v[t])
            p = torch.stack(seen).mean(0)
            yield t, {"probs": torch.cat([p, 1 - p])}  # K=2 × H × W


def _expected(video, first):
    """The running means of MemoryModel for a video T×3×H×W whose first prompt is on frame ``first``."""
    v = video[:, 0]
    out = torch.empty(v.shape[0], 2, *v.shape[1:])
    for t in range(first, v.shape[0]):
        out[t, 0] = v[first:t + 1].mean(0)
    for t in range(first - 1, -1, -1):
        out[t, 0] = v[t:first].mean(0)
    out[:, 1] = 1 - out[:, 0]
    return out


def _batch(b=2, t=6, first=(3, 0)):
    g = torch.Generator().manual_seed(0)
    frames = torch.zeros(b, t, dtype=torch.bool)
    for i, f in enumerate(first):
        frames[i, f] = True
    return {"video": torch.rand(b, t, 3, 4, 4, generator=g), "has_ann": torch.ones(b, t, dtype=torch.bool),
            "meta": [{"video_id": str(i)} for i in range(b)],
            "prompts": {"boxes": torch.rand(b, t, 2, 4, generator=g), "frames": frames}}


def test_has_video_api_is_declared_by_implementing_it():
    from models.metaarchs.unet_baseline import UNetBaseline

    assert MemoryModel().has_video_api
    assert not UNetBaseline(decoder_channels=[16, 16, 8, 8, 8]).has_video_api


def test_prompts_reach_their_frames_and_the_reverse_pass_fills_the_frames_before_the_first_prompt():
    model, batch = MemoryModel(), _batch()
    seen = []
    real = model.add_prompts
    model.add_prompts = lambda state, f, p: (seen.append((state["meta"]["video_id"], f, p)), real(state, f, p))
    probs = predict_with_video_api(model, batch)["probs"]
    assert probs.shape == (2, 6, 2, 4, 4)
    assert [(v, f) for v, f, _ in seen] == [("0", 3), ("1", 0)]
    assert torch.equal(seen[0][2]["boxes"], batch["prompts"]["boxes"][0, 3])  # K×4 of that frame
    assert "frames" not in seen[0][2]
    for i, first in enumerate((3, 0)):
        torch.testing.assert_close(probs[i], _expected(batch["video"][i], first))


class _Collect:
    def reset(self):
        self.outputs = []

    def process(self, batch, outputs):
        self.outputs.append(outputs["probs"])

    def evaluate(self):
        return {"num_samples": sum(len(p) for p in self.outputs)}


def test_whole_video_evaluation_dispatches_to_the_video_api_and_checks_required_prompts():
    model, batch, ev = MemoryModel(), _batch(), _Collect()
    amp = OmegaConf.create({"enabled": False})
    assert inference_on_dataset(model, [batch], [ev], torch.device("cpu"), amp, video_api=True) == {"num_samples": 2}
    torch.testing.assert_close(ev.outputs[0], predict_with_video_api(model, batch)["probs"])
    with pytest.raises(AssertionError, match="evaluated through it"):  # clip protocol: predict
        inference_on_dataset(model, [batch], [ev], torch.device("cpu"), amp, video_api=False)
    no_prompts = {k: v for k, v in batch.items() if k != "prompts"}
    with pytest.raises(ConfigError, match=r"requires \['prompts'\] in every evaluation batch"):
        inference_on_dataset(model, [no_prompts], [ev], torch.device("cpu"), amp, video_api=True)


def test_predict_video_runs_the_whole_video_through_the_video_api():
    class Unprompted(MemoryModel):
        requires = frozenset()

    frames = np.random.default_rng(0).integers(0, 256, (9, 8, 8), dtype=np.uint8)
    labels = predict_video(Unprompted(), frames, (8, 8), window=4)  # windows only bound the preprocessing
    video = torch.from_numpy(frames).float().div(255)[:, None].expand(-1, 3, -1, -1)
    want = _expected(video, 0)
    assert np.array_equal(labels, probs_to_labels(want).numpy().astype(np.uint8))
