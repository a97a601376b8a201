"""The CardiacUDC register on the embedded synthetic data: splits, sample counts, clip positions, mappers."""
from __future__ import annotations

import nibabel as nib
import numpy as np
import torch

from core.catalog import DatasetCatalog, MetadataCatalog
from core.registry import MAPPERS, build
from data_schedule.build import collate
from data_schedule.registers import cardiac_udc as reg


def labelled_videos(root, sites):
    """Ground truth from the raw files: {video_id: annotated frame indices} for videos with a label file."""
    out = {}
    for site in sites:
        for img in sorted((root / "cardiacUDC_dataset" / site).glob("*_image.nii.gz")):
            lab = img.with_name(img.name.replace("_image", "_label"))
            if lab.exists():
                arr = np.asarray(nib.load(lab).dataobj)  # (W, H, T)
                out[f"{site}/{img.name[:-13]}"] = [int(t) for t in np.flatnonzero(arr.any(axis=(0, 1)))]
    return out


def test_site_split_has_one_sample_per_annotated_frame(synth_root):
    for part, sites in reg.SITE_SPLIT.items():
        truth = labelled_videos(synth_root, sites)
        samples = DatasetCatalog.get(f"echo_synth_site_{part}")
        assert len(samples) == sum(len(v) for v in truth.values())
        got = {}
        for s in samples:
            got.setdefault(s["video_id"], []).append(s["frame_idx"])
        assert got == truth
        assert [s["sample_id"] for s in samples] == list(range(len(samples)))


def test_random_split_is_seeded_80_20_over_labelled_videos(synth_root):
    train = {s["video_id"] for s in DatasetCatalog.get("echo_synth_random_train")}
    test = {s["video_id"] for s in DatasetCatalog.get("echo_synth_random_test")}
    labelled = set(labelled_videos(synth_root, [s for s in reg.SITES if s != "Site_R_73"]))
    assert train | test == labelled and not train & test
    assert len(train) == round(0.8 * len(labelled))
    entries = [dict(site=v.split("/")[0], video=v.split("/")[1], label_path="x") for v in sorted(labelled)]
    again = reg.random_split(entries[::-1], "test")  # order of the listing does not matter
    assert {f"{e['site']}/{e['video']}" for e in again} == test


def test_unlabeled_split_has_every_frame_of_every_video(synth_root):
    samples = DatasetCatalog.get("echo_synth_unlabeled")
    n_frames = 0
    for site in reg.SITES:
        for img in (synth_root / "cardiacUDC_dataset" / site).glob("*_image.nii.gz"):
            n_frames += nib.load(img).shape[2]
    assert len(samples) == n_frames
    assert any(s["site"] == "Site_R_73" for s in samples)


def test_random_unlabeled_split_leaves_out_exactly_the_random_test_videos(synth_root):
    everything = DatasetCatalog.get("echo_synth_unlabeled")
    pool = DatasetCatalog.get("echo_synth_random_unlabeled")
    test = {s["video_id"] for s in DatasetCatalog.get("echo_synth_random_test")}
    train = {s["video_id"] for s in DatasetCatalog.get("echo_synth_random_train")}
    videos = {s["video_id"] for s in pool}
    assert test and not videos & test and train <= videos
    assert videos == {s["video_id"] for s in everything} - test  # label-less videos (Site_R_73, ...) stay in
    assert len(pool) == sum(1 for s in everything if s["video_id"] not in test)  # every frame of those videos
    assert not MetadataCatalog.get("echo_synth_random_unlabeled").labeled


def test_eval_mapper_centres_the_annotated_frame_and_keeps_native_gt(synth_root):
    samples = DatasetCatalog.get("echo_synth_site_test")
    mapper = build(MAPPERS, {"name": "ClipEvalMapper", "clip_len": 11, "size": [64, 64]}, num_classes=4)
    for meta in (samples[0], samples[-1]):
        s = mapper(meta)
        assert s["video"].shape == (11, 3, 64, 64) and s["video"].dtype == torch.float32
        assert 0 <= s["video"].min() and s["video"].max() <= 1
        assert s["masks"].shape == (11, 4, 64, 64) and s["masks"].dtype == torch.bool
        assert s["scored"].nonzero().flatten().tolist() == [5]  # only the centre frame is scored
        assert s["frame_idx"][5] == meta["frame_idx"] and s["has_ann"][5] and "clip_t" not in s["meta"]
        cache = meta["cache"]
        y0, y1, x0, x1 = cache.fan_box  # no transforms given: the register's default, the fan crop
        assert s["gt_full"].shape == (1, y1 - y0, x1 - x0)
        full = cache.labels()[meta["frame_idx"]].astype(np.int64)
        assert torch.equal(s["gt_full"][0], torch.from_numpy(full[y0:y1, x0:x1]))
        assert not full[:y0].any() and not full[y1:].any() and not full[:, :x0].any() and not full[:, x1:].any()
        assert set(s["gt_full"].unique().tolist()) == {0, 1, 2, 3, 4}
        assert s["masks"][5].any(dim=(1, 2)).all()  # all four chambers on the annotated frame
        assert not s["masks"][~s["has_ann"]].any()  # no labels on unannotated frames


def test_train_mapper_is_deterministic_per_seed_and_collates(synth_root):
    meta = DatasetCatalog.get("echo_synth_random_train")[0]
    mapper = build(MAPPERS, {"name": "ClipTrainMapper", "clip_len": 7, "size": [48, 56]}, num_classes=4)
    a, b, c = mapper(meta, seed=5), mapper(meta, seed=5), mapper(meta, seed=6)
    assert torch.equal(a["video"], b["video"]) and torch.equal(a["masks"], b["masks"])
    assert not torch.equal(a["video"], c["video"])
    assert a["video"].shape == (7, 3, 48, 56) and a["masks"].shape == (7, 4, 48, 56)
    assert a["has_ann"][3] and a["masks"][3].any() and not a["scored"].any()
    batch = collate([a, c])
    assert batch["video"].shape == (2, 7, 3, 48, 56) and batch["masks"].shape == (2, 7, 4, 48, 56)
    assert isinstance(batch["meta"], list) and len(batch["meta"]) == 2


def test_cache_keeps_whole_frames_and_the_fan_box_and_fancrop_crops_to_it(synth_root):
    from data_schedule.curation.fan_crop import fan_bbox

    meta = DatasetCatalog.get("echo_synth_site_test")[0]
    cache = meta["cache"]
    raw = np.asarray(nib.load(cache.image_path).dataobj).transpose(2, 1, 0)
    assert cache.image().shape == raw.shape and np.array_equal(cache.image()[3], raw[3])
    y0, y1, x0, x1 = cache.fan_box
    assert (y0, y1, x0, x1) == fan_bbox(raw[0]) and (y1 - y0, x1 - x0) != raw.shape[1:]  # side text lies outside
    # explicit FanCrop, the default (None) and FanCrop recomputing the box on the first frame agree; [] keeps all
    clip = lambda tf: build(MAPPERS, {"name": "ClipEvalMapper", "clip_len": 3, "size": [32, 32], "transforms": tf},
                            num_classes=4)(meta)
    explicit, default = clip([{"name": "FanCrop"}]), clip(None)
    recomputed = clip([{"name": "FanCrop", "threshold": 10}])
    whole = clip([])
    for other in (default, recomputed):
        assert torch.equal(explicit["video"], other["video"]) and torch.equal(explicit["gt_full"], other["gt_full"])
    assert explicit["gt_full"].shape[1:] == (y1 - y0, x1 - x0) and whole["gt_full"].shape[1:] == raw.shape[1:]
    assert not torch.equal(explicit["video"], whole["video"])


def test_site_adaptation_splits_share_one_held_out_half_of_the_test_site(synth_root):
    import pytest

    from data_schedule.sources.nifti import DataError

    truth = labelled_videos(synth_root, reg.SITE_SPLIT["test"])
    names = sorted(truth)
    pool = len(names) // 2
    train = DatasetCatalog.get("echo_synth_site_adapt1_train")
    test = DatasetCatalog.get("echo_synth_site_adapt1_test")
    assert {s["video_id"] for s in train} == {names[0]}
    assert {s["video_id"] for s in test} == set(names[pool:])
    assert len(test) == sum(len(truth[n]) for n in names[pool:])  # one sample per annotated frame
    if pool < 4:
        with pytest.raises(DataError, match="4 adaptation videos asked"):
            DatasetCatalog.get("echo_synth_site_adapt4_train")


def test_annotated_pair_clips_join_two_annotated_frames(synth_root):
    mapper = build(MAPPERS, dict(name="ClipTrainMapper", clip_len=6, size=[32, 32],
                                 frame_sampler=dict(name="annotated_pair")))
    metas = DatasetCatalog.get("echo_synth_random_train")
    for i, meta in enumerate(metas[:12]):
        s = mapper(meta, seed=i)
        idx = s["frame_idx"].tolist()
        assert meta["frame_idx"] in idx and len(idx) == 6 and idx == sorted(idx)
        if len(meta["annotated_frames"]) > 1:
            assert int(s["has_ann"].sum()) >= 2  # the reference and a neighbouring annotated frame
            other = [f for f in idx if f in meta["annotated_frames"] and f != meta["frame_idx"]]
            ann = sorted(meta["annotated_frames"])
            k = ann.index(meta["frame_idx"])
            assert set(other) & set(ann[max(0, k - 1):k + 2])
