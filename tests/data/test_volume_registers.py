"""CT volumes as videos of slices: the BTCV and KiTS23 registers on tiny raw-layout fixtures
(``raw_fixtures.write_btcv`` / ``write_kits23``), the embedded CTSynth's renderer, and SAM2InContext trained and
evaluated through the CLI on the fixtures (3D metrics in the results)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import main as cli
from core.catalog import DatasetCatalog, DatasetRoots
from core.registry import MAPPERS, build
from data_schedule.registers import btcv, kits23
from data_schedule.sources.nifti import DataError
from data_schedule.synthetic.ct_synth import CLASS_NAMES, render_volume
from data_schedule.synthetic.raw_fixtures import write_btcv, write_kits23
from trainers.evaluation import per_video_metas

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MEDVIDSEG_CACHE", str(tmp_path_factory.mktemp("ct_cache")))
        base = tmp_path_factory.mktemp("ct_raw")
        b = write_btcv(base, cases=range(1, 9), shape=(16, 24, 24), organs=range(1, 14))
        k = write_kits23(base, cases=range(4, 10))  # case_00009 falls in the seeded test split
        yield dict(base=base, btcv=b, kits=k)


@pytest.fixture
def use(roots):
    DatasetRoots.set("btcv", str(roots["base"]))
    DatasetRoots.set("kits23", str(roots["base"]))
    DatasetCatalog.clear_cache()
    yield roots
    DatasetCatalog.clear_cache()


def test_btcv_lists_slices_of_a_seeded_case_split(use):
    train, test = DatasetCatalog.get("btcv_train"), DatasetCatalog.get("btcv_test")
    ids = lambda ms: sorted({m["video_id"] for m in ms})  # noqa: E731
    assert set(ids(train)) | set(ids(test)) == {f"img{c:04d}" for c in range(1, 9)}
    assert ids(test) == sorted(c for c in ids(train) + ids(test) if btcv.split_of(c) == "test") and ids(test)
    m = next(x for x in test if x["frame_idx"] == 3)
    assert m["num_frames"] == 16 and m["voxel_spacing"] == (2.5, 0.8, 0.8) and m["spacing"] == (0.8, 0.8)
    assert m["class_values"] == [[k] for k in range(1, 14)] and m["annotated_frames"] == list(range(16))
    case = next(c for c in use["btcv"]["cases"] if c["case"] == m["video_id"])
    image = m["cache"].image()
    assert isinstance(image, np.memmap) and image.dtype == np.int16  # slices read from a memory map
    assert np.array_equal(image[3], case["image"][3]) and np.array_equal(m["cache"].labels()[3], case["label"][3])
    sample = build(MAPPERS, dict(name="VideoEvalMapper", size=[16, 16], num_classes=13, score="annotated"))(
        per_video_metas(test)[0])
    assert sample["scored"].all() and sample["meta"]["voxel_spacing"] == (2.5, 0.8, 0.8)
    assert sample["masks"].flatten(2).any(2).any(0).all()  # all 13 organs, each on its own slices
    assert not sample["masks"][[0, -1]].any()             # the first and last slice are empty


def test_kits23_slices_on_the_first_axis_and_overlapping_regions(use):
    metas = DatasetCatalog.get("kits23_regions_train")
    m = per_video_metas(metas)[0]
    case = next(c for c in use["kits"]["cases"] if c["case"] == m["video_id"])
    assert m["num_frames"] == 8 and m["voxel_spacing"] == (3.0, 0.8, 0.8)  # the affine puts S-I on axis 0
    assert np.array_equal(m["cache"].image()[2], case["image"][2])
    s = build(MAPPERS, dict(name="VideoEvalMapper", size=[24, 24], num_classes=3, score="annotated"))(m)
    lab = torch.from_numpy(case["label"].astype(np.int64))
    kidney_masses, masses, tumour = s["masks"].unbind(1)
    assert torch.equal(kidney_masses, lab > 0) and torch.equal(masses, (lab == 2) | (lab == 3))
    assert torch.equal(tumour, lab == 2) and tumour.any() and (tumour & kidney_masses).any()  # overlap
    one = per_video_metas(DatasetCatalog.get("kits23_train"))[0]
    assert one["class_values"] == [[1, 2]]  # seed 001: kidney + tumour, cysts background


def test_bad_volumes(tmp_path):
    write_btcv(tmp_path, cases=[1, 2], bad_label_shape=1, bad_affine=2)
    lab = tmp_path / "BTCV" / "RawData" / "Training" / "label"
    img = tmp_path / "BTCV" / "RawData" / "Training" / "img"
    with pytest.raises(DataError, match=r"label .*label0001.nii.gz has shape \(24, 24, 7\), its image .*img0001"):
        btcv.check_pair(img / "img0001.nii.gz", lab / "label0001.nii.gz")
    with pytest.raises(DataError, match=r"label .*label0002.nii.gz and image .*img0002.nii.gz have different affines"):
        btcv.check_pair(img / "img0002.nii.gz", lab / "label0002.nii.gz")
    (lab / "label0001.nii.gz").unlink()
    with pytest.raises(DataError, match=r"img0001.nii.gz: its label file .*label0001.nii.gz is missing"):
        btcv.list_cases(tmp_path / "BTCV")
    with pytest.raises(DataError, match="KiTS23 folder not found"):
        kits23._resolve(str(tmp_path), "data.roots.kits23")


def test_ct_synth_volume_is_deterministic_and_plausible():
    img, lab = render_volume(np.random.default_rng([0, 1]))
    img2, _ = render_volume(np.random.default_rng([0, 1]))
    assert np.array_equal(img, img2) and img.shape == lab.shape == (40, 128, 128) and img.dtype == np.int16
    assert set(np.unique(lab)) == {0, 1, 2, 3, 4} and len(CLASS_NAMES) == 4
    hu = {v: float(np.median(img[lab == v])) for v in range(1, 5)}
    assert 30 < hu[1] < 70 and 30 < hu[4] < 80 and abs(hu[4] - hu[1]) < 25  # spleen vs liver: low contrast
    assert hu[2] > 100 and hu[3] > 100                                    # enhancing kidneys
    assert img.min() < -900 and (~lab.reshape(40, -1).any(1)).any()       # air outside; slices without organs
    noise = img[lab == 4].std()
    assert 10 < noise < 40


@pytest.mark.parametrize("config, tag, classes", [("btcv", "btcv_test_volume", 13), ("kits23", "kits23_test_volume", 1)])
def test_sam2_incontext_trains_and_evaluates_on_the_fixtures(use, tmp_path, config, tag, classes):
    out = tmp_path / config
    support = dict(btcv="btcv_train", kits23="kits23_train")[config]
    args = ["--config_file", str(REPO / "configs" / config / "sam2_incontext_tiny.py"), "--output_dir", str(out),
            "train.max_iter=2", "train.eval_period=0", "train.checkpoint_period=2", "train.batch_size=2",
            "optim.scheduler.warmup_iters=1", "data.num_workers=0", "data.train_mapper.size=[32,32]",
            "data.train_mapper.clip_len=3", "data.train_mapper.support_size=1", "model.sam2.image_size=64",
            "log.wandb.enabled=false", "log.tensorboard=false", f"data.roots.{config}={use['base']}",
            f"data.evaluate=[{{name: {config}_test, tag: {tag}, per_video: true, mapper: {{name: InContextEvalMapper, "
            f"size: [32, 32], support_size: 1, support: {{name: fixed_volume, dataset: {support}}}}}, "
            f"evaluator: {{name: VolumeSegEvaluator}}}}]"]
    assert cli.main(args) == 0
    m = json.loads((out / "eval" / tag / "metrics.json").read_text())
    assert m["num_volumes"] == len({c["video_id"] for c in DatasetCatalog.get(f"{config}_test")})
    assert 0 <= m["mDice3D"] <= 1 and m["mHD95"] >= 0 and len(m["class_names"]) == classes
