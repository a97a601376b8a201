import subprocess
import sys
from pathlib import Path

import pytest

from core.catalog import DatasetCatalog, MetadataCatalog

REPO = Path(__file__).resolve().parents[2]


def test_catalog_is_lazy_and_caches():
    calls = []
    DatasetCatalog.register("_t_lazy", lambda: calls.append(1) or [{"x": 1}])
    try:
        assert calls == [] and not DatasetCatalog.is_loaded("_t_lazy")
        assert DatasetCatalog.get("_t_lazy") == [{"x": 1}]
        DatasetCatalog.get("_t_lazy")
        assert calls == [1]
    finally:
        DatasetCatalog.remove("_t_lazy")


def test_unknown_dataset_suggests_closest():
    import data_schedule  # noqa: F401

    with pytest.raises(KeyError, match="did you mean 'echo_synth_site_test'"):
        DatasetCatalog.get("echo_synth_site_tset")


def test_metadata_for_registered_names():
    import data_schedule  # noqa: F401

    m = MetadataCatalog.get("cardiac_udc_site_test")
    assert m.classes == ["LV", "LA", "RA", "RV"] and m.mode == "evaluate"
    assert MetadataCatalog.get("echo_synth_unlabeled").labeled is False


def test_import_touches_no_disk(tmp_path):
    """Importing every package registers all names without listing folders or generating data."""
    code = (
        "import builtins, os, pathlib\n"
        "seen = []\n"
        "real_listdir, real_scandir = os.listdir, os.scandir\n"
        "os.listdir = lambda p='.': seen.append(str(p)) or real_listdir(p)\n"
        "os.scandir = lambda p='.': seen.append(str(p)) or real_scandir(p)\n"
        "import data_schedule, models, evaluators, trainers\n"
        "from core.catalog import DatasetCatalog, MetadataCatalog\n"
        "names = DatasetCatalog.names()\n"
        "assert 'cardiac_udc_random_train' in names and 'echo_synth_unlabeled' in names, names\n"
        "assert 'camus_train' in names and 'camus_4ch_edes_test' in names, names\n"
        "assert 'sunseg_train' in names and 'sunseg_hard_unseen_test' in names, names\n"
        "bad = [p for p in seen if 'dataset' in p or 'echo_synth' in p]\n"
        "assert not bad, bad\n"
        "assert not any(DatasetCatalog.is_loaded(n) for n in names)\n"
        "assert {'echonet_dynamic_train', 'echonet_dynamic_val', 'echonet_dynamic_test'} <= set(names), names\n"
        "udc = ('cardiac_udc', 'echo_synth', 'echo_synth_v1')\n"
        "print('ok', sum(MetadataCatalog.get(n).family in udc for n in names))\n"
    )
    env = {"PATH": "/usr/bin:/bin", "ECHO_SYNTH_ROOT": str(tmp_path / "nothing_here"), "HOME": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("ok 39")  # (7 splits + 6 site_adapt{1,2,4}_train/test) × 3 CardiacUDC-layout families
    assert not (tmp_path / "nothing_here").exists()
