"""Support samplers (``data_schedule/support``) and the in-context mappers on three small in-memory volumes with
known class extents: which slices each sampler picks, determinism, the single-class training sample, the
whole-volume evaluation sample, and the bad inputs (a support volume lacking the class, more slices than exist)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from core.catalog import DatasetCatalog, MetadataCatalog
from core.errors import ConfigError
from core.registry import MAPPERS, SUPPORT_SAMPLERS, build
from data_schedule.support import SupportError, class_slices

T, H = 10, 16
NAME = "support_test_vols"


class ArrayVolume:
    """What a register's ``cache`` offers (``image()``, ``labels()``, ``where``), from arrays."""

    def __init__(self, name: str, image: np.ndarray, label: np.ndarray):
        self.where, self._image, self._label = name, image, label

    def image(self) -> np.ndarray:
        return self._image

    def labels(self) -> dict[int, np.ndarray]:
        return {t: self._label[t] for t in range(len(self._label))}


def _volume(vid: str, extents: dict[int, tuple[int, int]], seed: int) -> list[dict]:
    """Per-slice metas of a volume whose class value v fills a square on slices extents[v] = [lo, hi)."""
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 255, (T, H, H), dtype=np.uint8)
    label = np.zeros((T, H, H), np.int8)
    for v, (lo, hi) in extents.items():
        label[lo:hi, 2 * v:2 * v + 4, 2 * v:2 * v + 4] = v
    cache = ArrayVolume(f"/mem/{vid}", image, label)
    return [dict(video_id=vid, frame_idx=t, num_frames=T, sample_id=0, site="mem", cache=cache,
                 annotated_frames=list(range(T)), labeled=True, default_transforms=[]) for t in range(T)]


VOLS = {"a": {1: (2, 6), 2: (5, 9)}, "b": {1: (0, 3)}, "c": {1: (4, 10), 2: (1, 2)}}


@pytest.fixture(scope="module", autouse=True)
def dataset():
    metas = []
    for i, (vid, ext) in enumerate(VOLS.items()):
        metas += _volume(vid, ext, i)
    for i, m in enumerate(metas):
        m["sample_id"] = i
    DatasetCatalog.register(NAME, lambda: metas)
    MetadataCatalog.set(NAME, classes=["one", "two"])
    yield metas
    DatasetCatalog.remove(NAME)
    MetadataCatalog.remove(NAME)


def _query(dataset, vid):
    return next(m for m in dataset if m["video_id"] == vid)


def test_class_slices(dataset):
    assert class_slices(_query(dataset, "a"), 2) == [[2, 3, 4, 5], [5, 6, 7, 8]]
    assert class_slices(_query(dataset, "b"), 2) == [[0, 1, 2], []]
    merged = {**_query(dataset, "c"), "class_values": [[1, 2]]}  # one class made of two label values
    assert class_slices(merged, 1) == [[1, 4, 5, 6, 7, 8, 9]]
    # 4×4 squares; on slice 5 class two covers 4 of class one's pixels
    assert class_slices(_query(dataset, "a"), 2, min_pixels=16) == [[2, 3, 4], [5, 6, 7, 8]]
    assert class_slices(_query(dataset, "a"), 2, min_pixels=17) == [[], []]
    with pytest.raises(ConfigError, match="support.min_pixels must be >= 1"):
        build(SUPPORT_SAMPLERS, dict(name="random_slices", dataset=NAME, min_pixels=0))


def test_fixed_volume_even_random_and_self(dataset):
    s = build(SUPPORT_SAMPLERS, dict(name="fixed_volume", dataset=NAME))  # support volume "a"
    q = _query(dataset, "c")
    even = s(q, 0, 2, None, None, 2)
    assert [(v["video_id"], t) for v, t in even] == [("a", 3), ("a", 4)]  # interior of 2..5, evenly spaced
    assert [t for _, t in s(q, 1, 4, None, None, 2)] == [5, 6, 7, 8]       # all of them
    r1 = s(q, 0, 3, np.random.default_rng(0), None, 2)
    r2 = s(q, 0, 3, np.random.default_rng(0), None, 2)
    assert r1 == r2 and all(t in (2, 3, 4, 5) for _, t in r1) and len({t for _, t in r1}) == 3
    # the support volume as a query takes the next volume: "b"
    assert {v["video_id"] for v, _ in s(_query(dataset, "a"), 0, 2, None, None, 2)} == {"b"}


def test_fixed_volume_bad_input(dataset):
    s = build(SUPPORT_SAMPLERS, dict(name="fixed_volume", dataset=NAME, volume="b"))
    with pytest.raises(SupportError, match=r"volume 'b' of 'support_test_vols' has no slice with 'two' \(class 1\)"):
        s(_query(dataset, "c"), 1, 1, None, None, 2)
    with pytest.raises(SupportError, match=r"3 slice\(s\) contain 'one' \(class 0\), support_size asks for 5"):
        s(_query(dataset, "c"), 0, 5, None, None, 2)
    with pytest.raises(SupportError, match=r"support.volume 'bb' is not a volume .*did you mean 'b'"):
        build(SUPPORT_SAMPLERS, dict(name="fixed_volume", dataset=NAME, volume="bb"))(_query(dataset, "c"), 0, 1)
    with pytest.raises(ConfigError, match="set the support dataset"):
        build(SUPPORT_SAMPLERS, dict(name="fixed_volume"))


def test_random_and_nearest(dataset):
    q = _query(dataset, "a")
    rs = build(SUPPORT_SAMPLERS, dict(name="random_slices", dataset=NAME))
    picks = rs(q, 0, 5, None, None, 2)
    assert picks == rs(q, 0, 5, None, None, 2)  # deterministic without an rng
    pool = {("b", t) for t in (0, 1, 2)} | {("c", t) for t in range(4, 10)}
    assert {(v["video_id"], t) for v, t in picks} <= pool and len(picks) == 5
    with pytest.raises(SupportError, match="1 slice"):
        rs(q, 1, 2, None, None, 2)  # class "two" elsewhere: only c's slice 1
    near = build(SUPPORT_SAMPLERS, dict(name="nearest_position", dataset=NAME))
    # query slices around 1/9 relative position: b's 0, 1 (0, 1/9) are nearest
    assert [(v["video_id"], t) for v, t in near(q, 0, 2, None, [1], 2)] == [("b", 0), ("b", 1)]
    # the query's own volume is never a support
    assert all(v["video_id"] != "a" for v, _ in near(q, 0, 8, None, [8], 2))


def test_train_mapper_single_class(dataset):
    mapper = build(MAPPERS, dict(name="InContextTrainMapper", clip_len=3, size=[8, 8], num_classes=2,
                                 support=dict(name="fixed_volume", dataset=NAME), support_size=2))
    s = mapper(_query(dataset, "c"), seed=3)
    c = int(s["support"]["classes"][0])
    assert s["support"]["classes"].tolist() == [c, c]
    assert s["video"].shape == (3, 3, 8, 8) and s["support"]["images"].shape == (2, 3, 8, 8)
    assert s["support"]["masks"].shape == (2, 2, 8, 8)
    assert s["support"]["masks"][:, c].flatten(1).any(1).all()  # every support slice shows the class
    if c == 0:  # "random": 3 of c's slices 4..9, in order
        assert all(4 <= t <= 9 for t in s["frame_idx"].tolist()) and s["frame_idx"].tolist() == sorted(
            s["frame_idx"].tolist())
        assert s["masks"][:, 0].flatten(1).any(1).all()
    again = mapper(_query(dataset, "c"), seed=3)
    assert torch.equal(again["video"], s["video"]) and torch.equal(again["support"]["images"], s["support"]["images"])
    seen = {int(mapper(_query(dataset, "c"), seed=k)["support"]["classes"][0]) for k in range(12)}
    assert seen == {0, 1}  # both classes get drawn
    # class "two" of c spans one slice (< clip_len): a contiguous window that contains it
    windows = {tuple(s["frame_idx"].tolist()) for s in (mapper(_query(dataset, "c"), seed=k) for k in range(60))
               if int(s["support"]["classes"][0]) == 1}
    assert windows == {(0, 1, 2), (1, 2, 3)}
    # "contiguous": windows overlapping the class's extent 4..9 (c has 10 slices), its end and beyond included
    cont = build(MAPPERS, dict(name="InContextTrainMapper", clip_len=3, size=[8, 8], num_classes=2, slices="contiguous",
                               support=dict(name="fixed_volume", dataset=NAME), support_size=1))
    starts = {int(s["frame_idx"][0]) for s in (cont(_query(dataset, "c"), seed=k) for k in range(80))
              if int(s["support"]["classes"][0]) == 0}
    assert starts == {2, 3, 4, 5, 6, 7}  # slices 2..3 lie before the class: a window may show it on 1 slice


def test_eval_mapper_every_class(dataset):
    mapper = build(MAPPERS, dict(name="InContextEvalMapper", size=[8, 8], num_classes=2,
                                 support=dict(name="fixed_volume", dataset=NAME), support_size=2))
    s = mapper(_query(dataset, "c"))
    assert s["video"].shape == (T, 3, 8, 8) and s["scored"].all() and s["gt_full"].shape == (T, H, H)
    assert s["support"]["classes"].tolist() == [0, 0, 1, 1]
    for i, c in enumerate(s["support"]["classes"].tolist()):
        assert s["support"]["masks"][i, c].any()
    with pytest.raises(ConfigError, match="support_size must be >= 1"):
        build(MAPPERS, dict(name="InContextEvalMapper", num_classes=2, support=dict(name="fixed_volume",
                                                                                     dataset=NAME), support_size=0))
    with pytest.raises(ConfigError, match="must name a support sampler"):
        build(MAPPERS, dict(name="InContextEvalMapper", num_classes=2))
    # a 4×4 square shrunk to 2×2 pixels by nearest sampling vanishes: one line naming the slice
    tiny = build(MAPPERS, dict(name="InContextEvalMapper", size=[2, 2], num_classes=2,
                               support=dict(name="fixed_volume", dataset=NAME), support_size=2))
    with pytest.raises(SupportError, match=r"support slice \d+ of 'a' shows class 0 at native size but not at the "
                                           r"mapper's size \(2, 2\); raise support.min_pixels \(now 1\)"):
        tiny(_query(dataset, "c"))


def test_eval_mapper_annotated_queries_and_support_draws(dataset):
    base = dict(name="InContextEvalMapper", size=[8, 8], num_classes=2, support_size=2,
                support=dict(name="random_slices", dataset=NAME))
    sparse = {**_query(dataset, "c"), "annotated_frames": [7, 2, 5]}
    s = build(MAPPERS, dict(base, queries="annotated"))(sparse)
    assert s["frame_idx"].tolist() == [2, 5, 7] and s["scored"].all() and s["gt_full"].shape == (3, H, H)
    assert s["video"].shape == (3, 3, 8, 8)
    full = build(MAPPERS, base)(_query(dataset, "c"))
    assert torch.equal(s["video"], full["video"][[2, 5, 7]])  # the same frames as in the whole-video sample

    def picks(draw):
        m = build(MAPPERS, dict(base, support_draw=draw))
        return [m(_query(dataset, q))["support"]["images"] for q in ("b", "c")]

    assert all(torch.equal(x, y) for x, y in zip(picks(1), picks(1)))  # a draw is reproducible
    assert not all(torch.equal(x, y) for x, y in zip(picks(1), picks(2)))  # another draw, another support
    default = [build(MAPPERS, base)(_query(dataset, q))["support"]["images"] for q in ("b", "c")]
    assert all(torch.equal(x, y) for x, y in zip(picks(None), default))
    with pytest.raises(ConfigError, match="mapper.queries must be one of all, annotated"):
        build(MAPPERS, dict(base, queries="labelled"))
    with pytest.raises(ConfigError, match="support_draw must be None or >= 0"):
        build(MAPPERS, dict(base, support_draw=-1))


def test_train_mapper_augment_keys(dataset):
    base = dict(name="InContextTrainMapper", clip_len=3, size=[8, 8], num_classes=2,
                support=dict(name="fixed_volume", dataset=NAME), support_size=2)
    with pytest.raises(ConfigError, match=r"mapper.augment: unknown key\(s\) \['intask'\]"):
        build(MAPPERS, dict(base, augment=dict(intask={})))
    plain, aug = build(MAPPERS, base), build(MAPPERS, dict(base, augment=dict(in_task=dict(p=1.0))))
    a, b = plain(_query(dataset, "c"), seed=4), aug(_query(dataset, "c"), seed=4)
    assert a["frame_idx"].tolist() == b["frame_idx"].tolist()  # the same episode, augmented
    assert not torch.equal(a["video"], b["video"]) and b["support"]["images"].shape == a["support"]["images"].shape
