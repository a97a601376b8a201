"""AR-SEG (``models/metaarchs/arseg.py``, ``models/arseg/transformer.py``): the prefix-LM mask, the causal order (a
later token never changes an earlier logit), KV-cache decoding equal to uncached decoding, constrained decoding
always valid, the teacher-forced loss on a known tiny case, the parallel control (same parameters, no dependence
on the tokens), consensus at a vanishing temperature equal to greedy, the video prefix, config errors, and a tiny
model that learns a fixed layout."""
from __future__ import annotations

import math

import pytest
import torch

import models  # noqa: F401
from core.errors import ConfigError
from core.registry import MODELS, build
from models.arseg.transformer import prefix_lm_mask
from tests.models.test_lgrnet import _batch

TINY = dict(name="ARSeg", num_classes=4, dim=32, depth=2, heads=2, mlp_ratio=2.0, stem=[8, 8, 8],
            tokenizer=dict(name="grid", grid=4), refiner=dict(channels=8), cell_features=True)


def _model(**over) -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = {**TINY, **over}
    return build(MODELS, cfg).eval()


def test_prefix_lm_mask_known_case():
    allowed = prefix_lm_mask(2, 3, "causal").int().tolist()
    assert allowed == [[1, 1, 0, 0, 0], [1, 1, 0, 0, 0],  # prefix: bidirectional among itself, never the tokens
                       [1, 1, 1, 0, 0], [1, 1, 1, 1, 0], [1, 1, 1, 1, 1]]  # tokens: prefix + causal
    assert prefix_lm_mask(2, 3, "parallel").int().tolist()[2:] == [[1] * 5] * 3


def test_a_later_token_never_changes_an_earlier_logit_and_the_parallel_control_ignores_tokens():
    model = _model()
    frames = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    prefix, _, cells = model._prefix(frames, None)
    seq = torch.randint(0, 5, (2, 12), generator=torch.Generator().manual_seed(1))
    base = model.head(model.decoder(prefix, model._inputs(seq, 0, cells)))
    for j in (3, 7, 11):
        other = seq.clone()
        other[:, j] = (other[:, j] + 1) % 5
        changed = model.head(model.decoder(prefix, model._inputs(other, 0, cells)))
        assert torch.equal(changed[:, :j], base[:, :j])  # positions before j: bit-identical
        assert not torch.allclose(changed[:, j:], base[:, j:])  # j itself onwards: it does matter
    parallel = _model(order="parallel")
    assert sum(p.numel() for p in parallel.parameters()) == sum(p.numel() for p in model.parameters())
    a = parallel.head(parallel.decoder(prefix, parallel._inputs(seq, 0, cells), "parallel"))
    b = parallel.head(parallel.decoder(prefix, parallel._inputs(torch.zeros_like(seq), 0, cells), "parallel"))
    assert torch.equal(a, b)  # every position gets BOS: the output comes from the prefix alone


@pytest.mark.parametrize("over", [dict(tokenizer=dict(name="grid", grid=4)),
                                  dict(tokenizer=dict(name="grid", grid=4), cell_features=False),
                                  dict(tokenizer=dict(name="rle", grid=4), cell_features=False)])
@pytest.mark.parametrize("sample", [False, True])
def test_kv_cache_decoding_equals_uncached_decoding_and_is_always_valid(over, sample):
    model = _model(**over)
    prefix, _, cells = model._prefix(torch.rand(5, 3, 32, 32, generator=torch.Generator().manual_seed(2)), None)
    assert (cells is None) == (not model.cell_proj)
    cached = model.generate(prefix, cells, sample, torch.Generator().manual_seed(3), use_cache=True)
    plain = model.generate(prefix, cells, sample, torch.Generator().manual_seed(3), use_cache=False)
    assert torch.equal(cached, plain)
    tok = model.tokenizer
    for s in cached:
        end = int((s == tok.eos).nonzero()[0])
        assert tok.decode_grid(s[:end + 1]).shape == (4, 4)  # a valid sequence (it raises otherwise)
        for n in range(1, end + 1):
            assert tok.allowed(s[:n])[s[n]], (n, s.tolist())  # every emitted token was allowed
    # the cached step logits equal the full pass at every position
    seq = cached[:, :-1]
    full = model.head(model.decoder(prefix, model._inputs(seq, 0, cells)))
    out, caches = model.decoder.prefill(prefix, model._inputs(seq[:, :1], 0, cells), seq.shape[1])
    steps = [model.head(out)]
    for i in range(1, seq.shape[1]):
        steps.append(model.head(model.decoder.step(model._inputs(seq[:, i:i + 1], i, cells), caches)))
    torch.testing.assert_close(torch.cat(steps, 1), full, rtol=1e-5, atol=1e-5)


def test_teacher_forced_loss_on_a_known_tiny_case():
    model = _model(tokenizer=dict(name="grid", grid=2), refiner=None).train()
    with torch.no_grad():  # logits = the bias alone: CE of each target = logsumexp(bias) - bias[target]
        model.head.weight.zero_()
        model.head.bias.copy_(torch.tensor([1.0, 0.0, 0.5, -1.0, 2.0, 0.0, 0.0]))  # classes 0-4, BOS, EOS
    masks = torch.zeros(1, 1, 4, 32, 32, dtype=torch.bool)
    masks[0, 0, 0, :16, 16:] = True  # class 1 in the top-right cell
    masks[0, 0, 3, 16:, :] = True  # class 4 in the bottom row
    batch = {"video": torch.rand(1, 1, 3, 32, 32), "masks": masks, "has_ann": torch.ones(1, 1, dtype=torch.bool)}
    losses = model(batch)
    assert set(losses) == {"loss_token"}
    bias = model.head.bias.detach()
    lse = torch.logsumexp(bias, 0)
    targets = [0, 1, 4, 4, 6]  # cells 0, 1, 4, 4, then EOS (the sequence is BOS 0 1 4 4 EOS)
    expected = sum(float(lse - bias[t]) for t in targets) / len(targets)
    assert math.isclose(losses["loss_token"].item(), expected, rel_tol=1e-6)


def test_consensus_at_a_vanishing_temperature_equals_greedy_and_sampling_is_seeded():
    frames = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    greedy = _model().decode_frames(frames)
    cons = _model(decode=dict(mode="consensus", samples=3, temperature=1e-6)).decode_frames(frames)
    assert torch.equal(greedy["grid"], cons["grid"]) and torch.equal(greedy["logits"], cons["logits"])
    hot = _model(decode=dict(mode="sample", temperature=5.0))
    a, b = hot.decode_frames(frames), hot.decode_frames(frames)
    assert torch.equal(a["grid"], b["grid"])  # decode.seed: the same draw every call
    assert not torch.equal(a["grid"], greedy["grid"])
    assert (greedy["tokens"] == 4 * 4 + 2).all()


def test_video_prefix_is_the_previous_frame_only_when_asked(monkeypatch):
    batch = _batch(b=2, t=3, size=32)
    frames = batch["video"][:, 1]
    for n, sees in ((1, False), (2, True)):
        model = _model(prefix_frames=n)
        a = model._prefix(frames, batch["video"][:, 0])[0]
        b = model._prefix(frames, 1.0 - batch["video"][:, 0])[0]
        assert a.shape[1] == n * (32 // 16) ** 2 and torch.equal(a, b) != sees
        seen = {}
        monkeypatch.setattr(model, "decode_frames", lambda f, p=None: seen.update(f=f, p=p) or
                            {"grid": torch.zeros(6, 4, 4, dtype=torch.long), "logits": torch.zeros(6, 5, 32, 32),
                             "tokens": torch.ones(6)})
        model.predict(batch)
        assert torch.equal(seen["f"], batch["video"].flatten(0, 1))
        if sees:  # frame t's second prefix is frame t-1 of its own clip, frame 0's is frame 0
            prev = seen["p"].unflatten(0, (2, 3))
            assert torch.equal(prev[:, 1:], batch["video"][:, :-1]) and torch.equal(prev[:, 0], batch["video"][:, 0])
        else:
            assert seen["p"] is None


@pytest.mark.parametrize("over, match", [
    (dict(order="parallel", tokenizer=dict(name="rle", grid=4)), "needs the fixed-length 'grid' tokenizer"),
    (dict(tokenizer=dict(name="rle", grid=4), cell_features=True), "cell_features=True needs the 'grid' tokenizer"),
    (dict(order="sideways"), "model.order must be one of causal, parallel"),
    (dict(prefix_frames=3), "model.prefix_frames must be 1"),
    (dict(decode=dict(mode="beam")), "model.decode.mode must be one of greedy, sample, consensus"),
    (dict(decode=dict(beams=2)), r"model.decode: unknown key\(s\) \['beams'\]"),
    (dict(tokenizer=dict(name="grdi")), "grid"),
])
def test_config_errors_name_the_key(over, match):
    with pytest.raises(ConfigError, match=match):
        _model(**over)


def test_a_tiny_model_learns_a_fixed_layout_greedy_and_parallel():
    batch = _batch(b=4, t=1, size=32)  # four quadrants, one class each, brighter with the class
    for order in ("causal", "parallel"):
        model = _model(order=order).train()
        opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
        for _ in range(60):
            loss = sum(model(batch).values())
            opt.zero_grad()
            loss.backward()
            opt.step()
        model.eval()
        grid = model.decode_frames(batch["video"][:, 0])["grid"]
        target = model.tokenizer.to_grid(torch.tensor([[1, 2], [3, 4]]).repeat_interleave(2, 0)
                                         .repeat_interleave(2, 1))
        assert (grid == target).float().mean() > 0.95, (order, grid[0])


@pytest.mark.parametrize("order", ["causal", "parallel"])
def test_flop_count_includes_the_decoder_stack(order):
    """Both orders push all G² + 1 mask positions and the prefix through every block, so each count is at least
    the blocks' linear layers over those tokens (fvcore's trace once dropped the stack of the parallel control)."""
    from models.complexity import count_flops

    model, t, size = _model(order=order), 2, (32, 32)
    prefix, _, _ = model._prefix(torch.zeros(1, 3, *size), None)
    tokens = prefix.shape[1] + model.tokenizer.grid ** 2 + 1
    linear = sum(m.in_features * m.out_features for m in model.decoder.modules() if isinstance(m, torch.nn.Linear))
    got = count_flops(model, t, size, torch.device("cpu")) * 1e9
    assert got >= t * tokens * linear
