"""core.catalog.DatasetRoots / BadData: where a family's data lives (config > environment > default), unknown
families suggest the closest, a changed root drops the family's built lists only, the bad-data policy and record."""
from pathlib import Path

import pytest

from core.catalog import BadData, DatasetCatalog, DatasetRoots, MetadataCatalog
from core.errors import ConfigError


@pytest.fixture
def toy_family(monkeypatch):
    seen = []

    def resolve(base, how):
        seen.append((base, how))
        return Path(base or "/nowhere") / "toy_dataset"

    DatasetRoots.register("toyfam", resolve, env="TOYFAM_ROOT", default="/default/toy")
    for name, family in (("toyfam_train", "toyfam"), ("otherfam_train", "otherfam")):
        DatasetCatalog.register(name, lambda n=name: [{"sample_id": 0, "name": n}])
        MetadataCatalog.set(name, family=family)
    yield seen
    DatasetRoots._families.pop("toyfam")
    DatasetRoots._configured.pop("toyfam", None)
    for name in ("toyfam_train", "otherfam_train"):
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


def test_config_beats_environment_beats_default(toy_family, monkeypatch):
    monkeypatch.delenv("TOYFAM_ROOT", raising=False)
    assert DatasetRoots.get("toyfam") == Path("/default/toy/toy_dataset")
    monkeypatch.setenv("TOYFAM_ROOT", "/env/toy")
    assert DatasetRoots.get("toyfam") == Path("/env/toy/toy_dataset")
    DatasetRoots.configure({"toyfam": "/cfg/toy"})
    assert DatasetRoots.get("toyfam") == Path("/cfg/toy/toy_dataset")
    assert toy_family[-1] == ("/cfg/toy", "data.roots.toyfam") and toy_family[-2] == ("/env/toy", "$TOYFAM_ROOT")
    DatasetRoots.set("toyfam", None)  # back to the environment
    assert DatasetRoots.base("toyfam") == ("/env/toy", "$TOYFAM_ROOT")
    assert DatasetRoots.how_to_set("toyfam") == "export TOYFAM_ROOT=... or set data.roots.toyfam"


def test_a_new_root_drops_only_its_familys_built_lists(toy_family):
    DatasetCatalog.get("toyfam_train"), DatasetCatalog.get("otherfam_train")
    DatasetRoots.set("toyfam", "/somewhere/else")
    assert not DatasetCatalog.is_loaded("toyfam_train") and DatasetCatalog.is_loaded("otherfam_train")


def test_unknown_family_suggests_the_closest(toy_family):
    with pytest.raises(ConfigError, match=r"Unknown dataset family 'toyfm' \(data.roots\).*toyfam"):
        DatasetRoots.configure({"toyfm": "/x"})
    with pytest.raises(KeyError, match="already registered"):
        DatasetRoots.register("toyfam", lambda b, h: Path(b))


def test_the_registers_families_are_known_to_the_catalog_layer():
    import data_schedule  # noqa: F401

    assert {"cardiac_udc", "echo_synth", "echo_synth_v1"} <= set(DatasetRoots.families())
    assert DatasetRoots.checker("cardiac_udc") is not None


def test_bad_data_policy_and_record():
    BadData.set_policy("skip")
    assert BadData.may_skip()
    BadData.record("/data/a.nii.gz", "truncated")
    assert BadData.skipped == [("/data/a.nii.gz", "truncated")]
    BadData.set_policy("error")  # a new run's policy clears the record
    assert not BadData.may_skip() and BadData.skipped == []
    with pytest.raises(ConfigError, match="bad_sample_policy must be 'error' or 'skip', got 'ignore'"):
        BadData.set_policy("ignore")
