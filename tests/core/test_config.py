"""Tests for core/config.py: inheritance, strict overrides, error messages, struct mode, dump round trip, diff."""
from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from omegaconf import DictConfig, OmegaConf

from core.config import ConfigError, apply_overrides, config_diff, dump_config, load_config


def load(*args, **kwargs):
    """load_config without the framework's defaults: these tests pin down the mechanics on made-up keys."""
    return load_config(*args, defaults=None, **kwargs)


def write(root: Path, name: str, text: str) -> Path:
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


@pytest.fixture
def cfg_path(tmp_path: Path) -> Path:
    """configs/cardiac/unet.py -> [_base_/runtime.py -> _base_/defaults.py, _base_/data.py] (two levels, two bases)."""
    write(tmp_path, "configs/_base_/defaults.py", """
        seed = 0
        output = None
        train = dict(max_iter=10, lr=0.1, amp=False, clip=None, milestones=[5, 8], log_period=1)
    """)
    write(tmp_path, "configs/_base_/runtime.py", """
        _base_ = "./defaults.py"
        train = dict(max_iter=100, log_period=20)
        output = "output"
    """)
    write(tmp_path, "configs/_base_/data.py", """
        import math  # modules, functions and classes are helpers, not config
        def helper(): return 1
        data = dict(train=["echo_train"], test=["echo_test"], crop=(64, 64), aug=dict(flip=True, rotate=15))
        _private = 3
    """)
    return write(tmp_path, "configs/cardiac/unet.py", """
        _base_ = ["../_base_/runtime.py", "../_base_/data.py"]
        model = dict(name="unet_baseline", num_classes=4, head=dict(classes="${model.num_classes}"))
        train = dict(max_iter=1500, milestones=[1000])
        data = dict(aug=dict(_delete_=True, scale=0.5))
    """)


def test_inheritance_merges_dicts_and_replaces_lists(cfg_path: Path) -> None:
    cfg = load(cfg_path)
    assert isinstance(cfg, DictConfig)
    assert set(cfg.keys()) == {"seed", "train", "output", "data", "model"}  # no _base_, _private, helpers
    # Child beats runtime beats defaults; untouched keys survive from every level.
    assert cfg.train.max_iter == 1500 and cfg.train.lr == 0.1 and cfg.train.log_period == 20
    assert list(cfg.train.milestones) == [1000]  # lists replace, never merge element-wise
    assert list(cfg.data.crop) == [64, 64]  # tuples become lists
    assert cfg.data.train == ["echo_train"]
    assert cfg.model.head.classes == 4  # interpolation


def test_delete_replaces_base_dict(cfg_path: Path) -> None:
    aug = load(cfg_path).data.aug
    assert OmegaConf.to_container(aug) == {"scale": 0.5}


def test_later_base_wins(tmp_path: Path) -> None:
    write(tmp_path, "a.py", "x = dict(v=1, a=1)\n")
    write(tmp_path, "b.py", "x = dict(v=2, b=2)\n")
    cfg = load(write(tmp_path, "c.py", "_base_ = ['a.py', 'b.py']\n"))
    assert OmegaConf.to_container(cfg) == {"x": {"v": 2, "a": 1, "b": 2}}


@pytest.mark.parametrize(
    "override, key, expected",
    [
        ("train.max_iter=5", "train.max_iter", 5),
        ("train.lr=1e-3", "train.lr", 1e-3),  # plain YAML 1.1 would give the string '1e-3'
        ("train.lr=2E-4", "train.lr", 2e-4),
        ("train.lr=1", "train.lr", 1.0),  # int into float
        ("train.amp=true", "train.amp", True),
        ("model.name=lgrnet", "model.name", "lgrnet"),
        ("model.name=2024", "model.name", "2024"),  # a string key keeps the text
        ("data.test=[cardiac_udc_site_test]", "data.test", ["cardiac_udc_site_test"]),
        ("data.test=[a, b]", "data.test", ["a", "b"]),
        ("train.milestones=[1e-3, 2]", "train.milestones", [1e-3, 2]),
        ("train.clip=1.0", "train.clip", 1.0),  # a None key accepts anything
        ("model.name=null", "model.name", None),
        ("model.name=", "model.name", ""),
        ("model.head=${train.max_iter}", "model.head", 1500),
    ],
)
def test_override_values(cfg_path: Path, override: str, key: str, expected: object) -> None:
    cfg = load(cfg_path, [override])
    value = OmegaConf.select(cfg, key)
    value = OmegaConf.to_container(value) if OmegaConf.is_config(value) else value
    assert value == expected and type(value) is type(expected)


def test_override_with_plus_adds_nested_key(cfg_path: Path) -> None:
    cfg = load(cfg_path, ["+model.extra.depth=3", "+tag=[x]"])
    assert cfg.model.extra.depth == 3 and list(cfg.tag) == ["x"]
    with pytest.raises(AttributeError):  # still struct mode below the new key
        cfg.model.extra.dpeth
    with pytest.raises(ConfigError, match="already exists"):
        load(cfg_path, ["+train.max_iter=3"])


def test_override_dict_value_sets_keys_strictly(cfg_path: Path) -> None:
    cfg = load(cfg_path, ["train={max_iter: 7, lr: 1e-2}"])
    assert cfg.train.max_iter == 7 and cfg.train.lr == 0.01 and cfg.train.log_period == 20
    with pytest.raises(ConfigError, match="'train.max_itr'"):
        load(cfg_path, ["train={max_itr: 7}"])


def test_unknown_key_suggests_closest(cfg_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load(cfg_path, ["train.max_itr=5"])
    message = str(info.value)
    assert message == (
        "Unknown config key 'train.max_itr' in override 'train.max_itr=5'; did you mean 'train.max_iter'?"
    )
    with pytest.raises(ConfigError, match="Unknown config key 'trian'.*did you mean 'train'"):
        load(cfg_path, ["trian.max_iter=5"])
    with pytest.raises(ConfigError, match="Unknown config key 'model.head.clases'.*'model.head.classes'"):
        load(cfg_path, ["model.head.clases=3"])
    with pytest.raises(ConfigError, match="Unknown config key 'train.zzz'.*valid keys here: train.max_iter, "):
        load(cfg_path, ["train.zzz=1"])


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.max_iter=abc", "Override 'train.max_iter=abc': expected int, got str 'abc'"),
        ("train.max_iter=1.5", "expected int, got float"),
        ("train.max_iter=true", "expected int, got bool"),  # bool is not int
        ("train.amp=1", "expected bool, got int"),
        ("train.milestones=5", "expected list, got int"),
        ("data.aug=3", "expected dict, got int"),
        ("model.name=[a]", "expected str, got list"),
        ("seed.x=1", "'seed' is not a dict"),
        ("train.max_iter", "not of the form key=value"),
        ("=3", "not of the form key=value"),
        ("data.test=[a", "cannot parse value"),
    ],
)
def test_bad_overrides(cfg_path: Path, override: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load(cfg_path, [override])
    assert message in str(info.value) and "\n" not in str(info.value)


def test_apply_overrides_in_place(cfg_path: Path) -> None:
    cfg = load(cfg_path)
    apply_overrides(cfg, ["seed=3"])
    assert cfg.seed == 3


def test_struct_mode_blocks_typos_in_code(cfg_path: Path) -> None:
    cfg = load(cfg_path)
    with pytest.raises(AttributeError):
        cfg.train.max_itr
    with pytest.raises(AttributeError):
        cfg.train.max_itr = 3


def test_missing_file_and_base(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="Config file not found: .*nope.py"):
        load(tmp_path / "nope.py")
    child = write(tmp_path, "cfgs/child.py", "_base_ = '../_base_/gone.py'\n")
    with pytest.raises(ConfigError) as info:
        load(child)
    assert "child.py" in str(info.value) and "../_base_/gone.py" in str(info.value)


def test_syntax_and_runtime_errors_name_file_and_line(tmp_path: Path) -> None:
    bad = write(tmp_path, "bad.py", "a = 1\nb = dict(x=\n")
    with pytest.raises(ConfigError) as info:
        load(bad)
    message = str(info.value)
    assert message.startswith(f"Error in config file {bad}: SyntaxError:") and "(line 2)" in message
    boom = write(tmp_path, "boom.py", "a = 1\n\nb = undefined_name\n")
    with pytest.raises(ConfigError, match=r"boom.py: NameError: .*undefined_name.* \(line 3\)"):
        load(boom)
    base_boom = write(tmp_path, "uses_boom.py", "_base_ = 'boom.py'\n")
    with pytest.raises(ConfigError, match="boom.py: NameError"):  # errors in a base name the base
        load(base_boom)


def test_non_plain_data_is_rejected(tmp_path: Path) -> None:
    path = write(tmp_path, "obj.py", "import pathlib\nmodel = dict(root=pathlib.Path('x'))\n")
    with pytest.raises(ConfigError, match=r"obj.py: 'model.root' is not plain data"):
        load(path)


def test_base_cycle(tmp_path: Path) -> None:
    write(tmp_path, "a.py", "_base_ = 'b.py'\nx = 1\n")
    write(tmp_path, "b.py", "_base_ = ['a.py']\ny = 1\n")
    with pytest.raises(ConfigError, match=r"cycle: .*a.py -> .*b.py -> .*a.py"):
        load(tmp_path / "a.py")
    write(tmp_path, "self.py", "_base_ = './self.py'\n")
    with pytest.raises(ConfigError, match="cycle"):
        load(tmp_path / "self.py")


def test_dump_load_round_trip(cfg_path: Path, tmp_path: Path) -> None:
    cfg = load(cfg_path, ["train.lr=1e-10", "+tricky=[null, 'true', '1e-3', 'on', '010']"])
    out = tmp_path / "run" / "config.yaml"
    dump_config(cfg, out)
    assert [p.name for p in out.parent.iterdir()] == ["config.yaml"]  # no temp file left behind
    assert "${" not in out.read_text()  # interpolations resolved
    again = load(out)
    assert OmegaConf.to_container(again) == OmegaConf.to_container(cfg, resolve=True)
    assert config_diff(cfg, again) == []
    assert OmegaConf.is_struct(again)
    assert load(out, ["train.max_iter=3"]).train.max_iter == 3


def test_config_diff(cfg_path: Path) -> None:
    a = load(cfg_path)
    b = load(cfg_path, ["train.lr=0.5", "data.test=[x]", "+extra.k=1", "model.num_classes=3"])
    # model.head.classes follows model.num_classes through its interpolation.
    assert config_diff(a, b) == ["data.test", "extra.k", "model.head.classes", "model.num_classes", "train.lr"]
    assert config_diff(a, a) == []
    assert config_diff({"m": {"x": 1}}, {"m": 5}) == ["m", "m.x"]
