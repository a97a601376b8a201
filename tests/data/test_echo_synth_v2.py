"""EchoSynth v2: the default image model. Every effect is switchable and measured where it acts; v1 stays
available bit for bit; a dataset of the wrong preset is refused, never overwritten."""
from __future__ import annotations

import hashlib
import json
import math

import numpy as np
import pytest

from data_schedule.sources.nifti import DataError
from data_schedule.synthetic import echo_synth as es
from data_schedule.synthetic import echo_synth_v2 as v2
from data_schedule.synthetic import realism

SMALL = dict(size_scale=0.5, frames=(22, 26), annotated_frames=(3, 4))
SITE = "Site_G_100"


def render(seed: int = 0, site: str = SITE, labeled: bool = True, **over):
    params, styles = es.resolve_params("v2", **{**SMALL, **over})
    return es.render_video(site, np.random.default_rng([seed, es.SITE_NAMES.index(site), 0]), params,
                           styles[site], labeled=labeled)


def _geometry(**over) -> es._Geometry:
    _, styles = es.resolve_params("v2", **{**SMALL, **over})
    return es._Geometry(styles[SITE])


def _in_box(video: np.ndarray, geo: es._Geometry) -> np.ndarray:
    return video[(slice(None), *geo.box)].astype(np.float64)


def test_v2_is_the_default_and_v1_is_bit_identical():
    assert es.DEFAULT_PRESET == "v2" and es.resolve_params()[0]["preset"] == "v2"
    assert es.GENERATOR_VERSION == es.GENERATOR_VERSIONS["v2"] == v2.GENERATOR_VERSION_V2
    # v1 output recorded before v2 existed (same seed/site/parameters): old tables can be regenerated
    params, styles = es.resolve_params("v1", size_scale=0.4, frames=(8, 10), annotated_frames=(2, 3))
    v, lab, _ = es.render_video("Site_G_20", np.random.default_rng([3, 1, 0]), params, styles["Site_G_20"])
    assert v.shape == (10, 77, 94)
    assert hashlib.sha256(v.tobytes()).hexdigest()[:16] == "07a0e437eb87826e"
    assert hashlib.sha256(lab.tobytes()).hexdigest()[:16] == "86e9edcda545504b"
    with pytest.raises(ValueError, match=r"unknown EchoSynth preset 'v3'.*'v2'"):
        es.resolve_params("v3")
    with pytest.raises(TypeError, match="did you mean 'rib_shadow_prob'"):
        es.resolve_params("v2", rib_shadow_prb=1.0)


def test_deterministic_and_seed_dependent():
    a, la, ia = render(seed=4)
    b, lb, ib = render(seed=4)
    c, _, _ = render(seed=5)
    assert np.array_equal(a, b) and np.array_equal(la, lb) and ia == ib
    assert a.shape != c.shape or not np.array_equal(a, c)
    assert a.dtype == np.uint8 and la.dtype == np.int8


def test_labels_follow_the_anatomy_and_stay_disjoint_classes():
    video, label, info = render(seed=1)
    ann = info["annotated_frames"]
    assert ann and all(set(np.unique(label[t])) == {0, 1, 2, 3, 4} for t in ann)
    others = [t for t in range(len(label)) if t not in ann]
    assert not label[others].any()
    geo = _geometry()
    assert not label[:, ~geo.fan].any()  # nothing outside the fan


def test_matches_the_real_clip_histogram_on_average():
    """The calibrated display: in-fan grey levels of a default video within the realism targets."""
    video, _, _ = render(seed=0, labeled=False, size_scale=1.0)
    m = realism.measure(video)
    checks = realism.check_targets(m)
    for key in ("p50", "p90", "p99", "dark_fraction", "corr_y"):
        assert checks[key][3], (key, checks[key])


def test_wall_dropout_dims_the_wall_where_placed():
    over = dict(quality_mix=(1, 0, 0), wall_dropout_prob=1.0, wall_dropout_persistence=1.0,
                wall_dropout_walls={"lv_lateral": 1.0}, wall_dropout_jitter_deg=0.0, transient_dropout_frames=(0, 0))
    on, lab_on, info = render(seed=2, wall_dropout_db=(20.0, 20.0), **over)
    off, lab_off, _ = render(seed=2, wall_dropout_db=(0.0, 0.0), **over)
    assert info["wall_dropout"]["wall"] == "lv_lateral" and info["wall_dropout"]["frames"] == len(on)
    assert np.array_equal(lab_on, lab_off)  # the annotation follows the cavity, not the visible wall
    geo = _geometry()
    tc, hw, r_lo, r_hi = info["wall_dropout"]["region"]
    inside = (np.abs(geo.theta - tc) < hw) & (geo.r > r_lo) & (geo.r < r_hi) & geo.fan_in_box
    far = (np.abs(geo.theta - tc) > hw + math.radians(12)) & geo.fan_in_box  # beyond the blur of the edges
    a, b = _in_box(on, geo), _in_box(off, geo)
    # 20 dB dimmer: the wall's pixels drop towards the noise floor (which the dropout does not touch)
    assert a[:, inside].mean() < 0.75 * b[:, inside].mean() and b[:, inside].mean() - a[:, inside].mean() > 5
    assert np.array_equal(a[:, far], b[:, far])  # nothing else changes


def test_poor_videos_lose_two_contiguous_lv_segments():
    _, _, info = render(seed=3, quality_mix=(0, 0, 1))
    d = info["wall_dropout"]
    assert info["quality"] == "poor" and d["wall"] == "lv_lateral" and d["fraction"] >= 0.55
    _, _, good = render(seed=3, quality_mix=(1, 0, 0), wall_dropout_prob=0.0)
    assert good["quality"] == "good" and good["wall_dropout"] is None


def test_clutter_is_static_while_the_heart_moves():
    over = dict(quality_mix=(1, 0, 0), clutter_depth_cm=(4.0, 4.0))
    on, _, info = render(seed=6, labeled=False, clutter_level=(0.6, 0.6), **over)
    off, _, _ = render(seed=6, labeled=False, clutter_level=(0.0, 0.0), **over)
    geo = _geometry()
    near = (geo.r < geo.R0_FRAC + 0.7 * info["clutter_depth"]) & geo.fan_in_box
    a, b = _in_box(on, geo)[:, near], _in_box(off, geo)[:, near]
    assert a.mean() - b.mean() > 5  # the bands brighten the near field
    # what the clutter adds, as a depth profile (mean over the beams at each radius): the same bands in every
    # frame while the heart moves
    r_bin = np.round(geo.r[near] * geo.R).astype(int)
    count = np.bincount(r_bin)
    profiles = np.stack([np.bincount(r_bin, d) / np.maximum(count, 1) for d in a - b])[:, count > 0]
    mean = profiles.mean(0)
    corr = [np.corrcoef(prof, mean)[0, 1] for prof in profiles]
    assert np.mean(corr) > 0.85 and min(corr) > 0.6, corr
    assert np.array_equal(_in_box(on, geo)[:, ~near & (geo.r > 0.5)], _in_box(off, geo)[:, ~near & (geo.r > 0.5)])


def test_label_jitter_changes_the_contour_not_the_class_or_the_image():
    v0, l0, i0 = render(seed=7, label_jitter_px=0.0)
    v1_, l1, _ = render(seed=7, label_jitter_px=1.5)
    assert np.array_equal(v0, v1_)
    changed = 0
    for t in i0["annotated_frames"]:
        assert set(np.unique(l0[t])) == set(np.unique(l1[t])) == {0, 1, 2, 3, 4}
        for c in (1, 2, 3, 4):
            a, b = l0[t] == c, l1[t] == c
            dice = 2 * (a & b).sum() / (a.sum() + b.sum())
            assert 0.7 < dice < 0.995, (t, c, dice)  # a 1-2 px contour change, not a different chamber
        changed += int((l0[t] != l1[t]).sum())
    assert changed > 0


def test_septal_gap_removes_septum_echo_only():
    on, l_on, info = render(seed=8, ias_gap_prob=1.0, ias_gap_mm=(15.0, 15.0))
    off, l_off, _ = render(seed=8, ias_gap_prob=0.0, ias_gap_mm=(15.0, 15.0))
    assert info["ias_gap_mm"] == 15.0
    assert np.array_equal(l_on, l_off)  # annotators close the gap along the septum line
    changed = on != off
    assert 0 < changed.mean() < 0.02  # a small region
    assert on[changed].astype(float).mean() < off[changed].astype(float).mean() - 2  # darker there


def test_rib_shadow_and_tgc_residual():
    on, l_on, info = render(seed=9, labeled=True, rib_shadow_prob=1.0, rib_shadow_attenuation=(0.9, 0.9))
    off, l_off, _ = render(seed=9, labeled=True, rib_shadow_prob=0.0, rib_shadow_attenuation=(0.9, 0.9))
    assert np.array_equal(l_on, l_off)
    geo = _geometry()
    rib = info["rib_shadow"]
    tc, hw = math.radians(rib["center_deg"]), math.radians(rib["width_deg"]) / 2
    wedge = (np.abs(geo.theta - tc) < 0.7 * hw) & (geo.r > geo.R0_FRAC + 0.1) & geo.fan_in_box
    assert _in_box(off, geo)[:, wedge].mean() - _in_box(on, geo)[:, wedge].mean() > 15

    up, _, i_up = render(seed=10, labeled=False, tgc_residual_db=(6.0, 6.0), quality_mix=(1, 0, 0))
    flat, _, _ = render(seed=10, labeled=False, tgc_residual_db=(0.0, 0.0), quality_mix=(1, 0, 0))
    deep, shallow = (geo.r > 0.75) & geo.fan_in_box, (geo.r < 0.3) & (geo.r > 0.15) & geo.fan_in_box

    def p90(v, region):  # bright pixels: the ones above the noise floor, which the gain moves
        return np.percentile(_in_box(v, geo)[:, region], 90)

    d_deep, d_shallow = p90(up, deep) - p90(flat, deep), p90(up, shallow) - p90(flat, shallow)
    assert np.sign(d_deep - d_shallow) == np.sign(i_up["tgc_residual_db"]) and abs(d_deep - d_shallow) > 5


def test_transient_dropouts_only_touch_their_frames():
    on, _, info = render(seed=11, labeled=False, transient_dropout_frames=(0.3, 0.3))
    off, _, _ = render(seed=11, labeled=False, transient_dropout_frames=(0.0, 0.0))
    episodes = info["transient_dropouts"]
    assert episodes and all(3 <= b - a <= 10 for a, b in episodes)
    inside = np.zeros(len(on), bool)
    for a, b in episodes:
        inside[a:b] = True
    assert np.array_equal(on[~inside], off[~inside])
    assert (on[inside] != off[inside]).any()


def test_anatomy_varies_and_cycles_within_the_published_ranges():
    geo = _geometry()
    params, _ = es.resolve_params("v2", **SMALL)
    facts = []
    for k in range(12):
        an = v2._Anatomy(np.random.default_rng(k), params)
        hx, hy = geo.px - an.crux[0], geo.py - an.crux[1]
        ed, es_ = v2._label_frame(an, hx, hy, 0.0, geo.fan_in_box), v2._label_frame(an, hx, hy, 1.0, geo.fan_in_box)
        lv_fac = 1 - (es_ == 1).sum() / (ed == 1).sum()
        rv_fac = 1 - (es_ == 4).sum() / (ed == 4).sum()
        assert abs(lv_fac - an.lv_area_change) < 0.08 and 0.3 < lv_fac < 0.65, (k, lv_fac, an.lv_area_change)
        assert abs(rv_fac - an.rv_area_change) < 0.1 and rv_fac > 0.25, (k, rv_fac, an.rv_area_change)
        facts.append(((ed == 1).sum(), an.L0, an.foreshortened))
    sizes = [f[0] for f in facts]
    assert max(sizes) / min(sizes) > 1.3  # chambers differ between videos (LGSD needs distinct clips)
    fs = v2._Anatomy(np.random.default_rng(0), {**params, "foreshortening_prob": 1.0, "foreshortening": (0.2, 0.2)})
    full = v2._Anatomy(np.random.default_rng(0), {**params, "foreshortening_prob": 0.0})
    assert fs.foreshortened and fs.L0 == pytest.approx(0.8 * full.L0)


def test_manifest_records_the_preset_and_per_video_draws(tmp_path):
    out = es.generate_echo_synth(tmp_path / "v2", seed=0, videos_per_site=1, **SMALL)
    m = json.loads((out / "echo_synth.json").read_text())
    assert m["preset"] == "v2" and m["version"] == "2.0.0"
    assert all(v["quality"] in v2.QUALITIES and "wall_dropout" in v and "ias_gap_mm" in v and 15 <= v["depth_cm"] <= 19
               for v in m["videos"])
    old = es.generate_echo_synth(tmp_path / "v1", seed=0, videos_per_site=1, preset="v1", **SMALL)
    m1 = json.loads((old / "echo_synth.json").read_text())
    assert m1["preset"] == "v1" and m1["version"] == "1.0.0" and "quality" not in m1["videos"][0]


def test_a_folder_of_the_other_preset_is_refused_not_overwritten(tmp_path):
    old = es.generate_echo_synth(tmp_path, seed=0, videos_per_site=1, preset="v1", **SMALL)
    manifest = (old / "echo_synth.json").read_text()
    legacy = json.loads(manifest)
    legacy.pop("preset")  # manifests written before v2 had no preset key: they are v1
    (old / "echo_synth.json").write_text(json.dumps(legacy))
    with pytest.raises(DataError, match=r"echo_synth\.json says EchoSynth preset 'v1' .* preset 'v2' was asked"):
        es.ensure_echo_synth(tmp_path)
    assert es.ensure_echo_synth(tmp_path, preset="v1") == old
    assert json.loads((old / "echo_synth.json").read_text()) == legacy  # untouched


def test_v1_family_is_registered():
    import data_schedule  # noqa: F401
    from core.catalog import DatasetCatalog, MetadataCatalog

    for name in ("echo_synth_v1_random_train", "echo_synth_v1_random_test", "echo_synth_v1_site_test"):
        assert name in DatasetCatalog and MetadataCatalog.get(name).family == "echo_synth_v1"
    assert MetadataCatalog.get("echo_synth_random_train").family == "echo_synth"
