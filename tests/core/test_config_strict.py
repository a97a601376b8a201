"""Config files are as strict as overrides: a key no base defines in a section the framework owns fails at load
time naming the file, the dotted key and the closest valid keys; component arguments (model, mappers, scheduler,
optimizer) are checked against the component's signature when it is built, naming the config path and the file;
``+key`` adds a key on purpose and survives a dump; every shipped config loads and builds."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

import main as cli
from core.config import (ConfigError, config_from_container, config_to_container, dump_config, load_config,
                         origin)
from core.registry import (EVALUATORS, MAPPERS, MODELS, Registry, build, call, check_arguments, forwards)
from tests.conftest import TINY_OVERRIDES
from trainers.build import build_optimizer, build_scheduler

REPO = Path(__file__).resolve().parents[2]
UNET, LGRNET = REPO / "configs/cardiac/unet_tiny.py", REPO / "configs/cardiac/lgrnet_tiny.py"


def child(tmp_path: Path, text: str, base: Path = UNET, name: str = "ablation.py") -> Path:
    path = tmp_path / name
    path.write_text(f'_base_ = ["{base}"]\n{text}\n')
    return path


@pytest.mark.parametrize("text, key, hint", [
    ("train = dict(max_itr=3, eval_period=3)", "train.max_itr", "'train.max_iter'"),
    ("train = dict(amp=dict(enable=False))", "train.amp.enable", "'train.amp.enabled'"),
    ("optim = dict(base_lrr=1e-3)", "optim.base_lrr", "'optim.base_lr'"),
    ("optim = dict(scheduler=dict(warmup_itrs=50))", "optim.scheduler.warmup_itrs", "'optim.scheduler.warmup_iters'"),
    ("log = dict(tensorbord=False)", "log.tensorbord", "'log.tensorboard'"),
    ("data = dict(num_worker=0)", "data.num_worker", "'data.num_workers'"),
    ("data = dict(train_mapper=dict(clip_lenn=3))", "data.train_mapper.clip_lenn", "'data.train_mapper.clip_len'"),
    ("trian = dict(max_iter=3)", "trian", "'train'"),
])
def test_a_misspelt_key_in_a_file_fails_at_load_naming_file_key_and_suggestion(tmp_path, text, key, hint):
    path = child(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    msg = str(info.value)
    assert f"Unknown config key {key!r} in config file {path}; did you mean {hint}" in msg
    assert "\n" not in msg


def _cli_error(capsys, args) -> str:
    capsys.readouterr()
    assert cli.main(args) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_the_three_reported_cases_end_in_one_line_with_the_right_suggestion(synth_root, tmp_path, capsys):
    out = tmp_path / "run"
    typo = child(tmp_path, "train = dict(max_itr=3, eval_period=3, checkpoint_period=3)", name="typo.py")
    err = _cli_error(capsys, ["--config_file", str(typo), "--output_dir", str(out)])
    assert "'train.max_itr'" in err and "did you mean 'train.max_iter'" in err and str(typo) in err

    err = _cli_error(capsys, ["--config_file", str(UNET), "--output_dir", str(out), "+optim.scheduler.warmup_itrs=50"])
    assert err == ("error: Unknown config key 'optim.scheduler.warmup_itrs' (set in override "
                   "'+optim.scheduler.warmup_itrs=50'): warmup_cosine takes no argument 'warmup_itrs'; did you mean "
                   "'optim.scheduler.warmup_iters', 'optim.scheduler.warmup_factor'? valid keys of optim.scheduler: warmup_iters, warmup_factor, "
                   "min_lr_ratio")

    nested = child(tmp_path, 'model = dict(encoder=dict(scan_order="zigzag"))', base=LGRNET, name="nested.py")
    err = _cli_error(capsys, ["--config_file", str(nested), "--output_dir", str(out)])
    assert err.startswith(f"error: Unknown config key 'model.encoder.scan_order' (set in {nested}): "
                          f"LocalGlobalEncoder takes no argument 'scan_order'; did you mean "
                          f"'model.encoder.scan.scan_order'? valid keys of model.encoder: num_layers, n_heads, ")
    assert not out.exists()  # refused before the run directory was created


def test_model_keys_are_checked_against_the_constructors_with_file_and_path(tmp_path):
    cfg = load_config(child(tmp_path, "model = dict(num_clases=4)", name="m.py"))
    with pytest.raises(ConfigError, match=r"'model.num_clases' \(set in .*m.py\): UNetBaseline takes no argument "
                                          r"'num_clases'; did you mean 'model.num_classes'\?"):
        build(MODELS, cfg.model)
    cfg = load_config(child(tmp_path, "model = dict(backbone=dict(nrom='group'))", base=LGRNET, name="b.py"))
    with pytest.raises(ConfigError, match=r"'model.backbone.nrom' \(set in .*b.py\): TimmBackbone .*"
                                          r"did you mean 'model.backbone.norm'"):
        build(MODELS, cfg.model)
    cfg = load_config(child(tmp_path, "model = dict(loss=dict(matcher=dict(cost_dise=1.0)))", base=LGRNET,
                            name="l.py"))
    with pytest.raises(ConfigError, match=r"'model.loss.matcher.cost_dise' \(set in .*l.py\): HungarianVideoMatcher"
                                          r".*did you mean 'model.loss.matcher.cost_dice'"):
        build(MODELS, cfg.model)
    cfg = load_config(child(tmp_path, "model = dict(encoder=dict(scan=dict(d_stat=8)))", base=LGRNET, name="s.py"))
    with pytest.raises(ConfigError, match=r"'model.encoder.scan.d_stat'.*HilbertScanStage.*'model.encoder.scan.d_state'"):
        build(MODELS, cfg.model)  # HilbertScanStage forwards **kwargs to the scan: its arguments count too
    cfg = load_config(LGRNET, ["model.name=LGSD", "+model.lgsd={}", "+model.d_modle=8"])
    with pytest.raises(ConfigError, match=r"'model.d_modle' \(set in override.*LGSD.*did you mean 'model.d_model'"):
        build(MODELS, cfg.model)  # LGSD forwards **kwargs to LGRNet
    with pytest.raises(ConfigError, match="cannot be set: the code that builds LocalGlobalEncoder passes 'd_model'"):
        build(MODELS, load_config(LGRNET, ["+model.encoder.d_model=8"]).model)


def test_adding_a_key_on_purpose_with_plus_and_its_round_trip(tmp_path):
    path = child(tmp_path, 'data = {"+note": "seed 3 of 5"}\ntrain = {"+my_hook_period": 7}')
    cfg = load_config(path)
    assert cfg.data.note == "seed 3 of 5" and cfg.train.my_hook_period == 7
    assert origin(cfg, "train.my_hook_period") == str(path) and origin(cfg, "train.seed") == "core/defaults.py"
    dump_config(cfg, tmp_path / "run" / "config.yaml")
    text = (tmp_path / "run" / "config.yaml").read_text()
    assert "+note: seed 3 of 5" in text and "+my_hook_period: 7" in text
    again = load_config(tmp_path / "run" / "config.yaml")
    assert OmegaConf.to_container(again) == OmegaConf.to_container(cfg)
    stored = config_from_container(config_to_container(cfg), "checkpoint x.pth")
    assert OmegaConf.to_container(stored) == OmegaConf.to_container(cfg)
    with pytest.raises(ConfigError, match=r"key 'data.num_workers' already exists; drop the '\+'"):
        load_config(child(tmp_path, 'data = {"+num_workers": 0}', name="dup.py"))


def test_a_run_config_yaml_and_a_checkpoint_config_are_checked_too(tmp_path):
    cfg = load_config(UNET)
    data = config_to_container(cfg)
    data["train"]["max_itr"] = 3
    bad_yaml = tmp_path / "config.yaml"
    bad_yaml.write_text(OmegaConf.to_yaml(OmegaConf.create(data)))
    with pytest.raises(ConfigError, match=f"'train.max_itr' in config file {re.escape(str(bad_yaml))}; did you mean"):
        load_config(bad_yaml)
    with pytest.raises(ConfigError, match=r"'train.max_itr' in config file checkpoint a.pth; did you mean"):
        config_from_container(data, "checkpoint a.pth")
    del data["train"]["max_itr"]
    data["model"]["num_clases"] = 4
    stored = config_from_container(data, "checkpoint a.pth")
    with pytest.raises(ConfigError, match=r"'model.num_clases' \(set in checkpoint a.pth\)"):
        build(MODELS, stored.model)


def test_a_renamed_component_takes_its_own_keys_and_inherited_foreign_ones_are_named(tmp_path):
    model = torch.nn.Linear(2, 2)
    cfg = load_config(child(tmp_path, 'optim = dict(scheduler=dict(_delete_=True, name="warmup_step", '
                                      'milestones=[5], warmup_iters=2))', name="step.py"))
    build_scheduler(build_optimizer(model, cfg.optim), cfg.optim.scheduler, 10)
    renamed = child(tmp_path, 'optim = dict(scheduler=dict(name="warmup_step", milestones=[5]))', name="r.py")
    cfg = load_config(renamed)  # a new name: its keys are the new component's, checked when built
    with pytest.raises(ConfigError, match=r"'optim.scheduler.min_lr_ratio' \(set in core/defaults.py\): "
                                          r"warmup_step takes no argument 'min_lr_ratio'"):
        build_scheduler(build_optimizer(model, cfg.optim), cfg.optim.scheduler, 10)
    sgd = build_optimizer(model, load_config(UNET, ["optim.name=SGD", "optim.momentum=0.5"]).optim)
    assert isinstance(sgd, torch.optim.SGD) and sgd.defaults["momentum"] == 0.5
    with pytest.raises(ConfigError, match=r"optim.momentum=0.5 \(set in override .*\) has no effect on AdamW"):
        build_optimizer(model, load_config(UNET, ["optim.momentum=0.5"]).optim)
    with pytest.raises(ConfigError, match=r"'optim.amsgrad_x'.*did you mean 'amsgrad'"):
        build_optimizer(model, load_config(UNET, ["+optim.amsgrad_x=true"]).optim)
    assert build_optimizer(model, load_config(UNET, ["+optim.amsgrad=true"]).optim).defaults["amsgrad"] is True


def test_build_and_call_check_keyword_arguments():
    reg = Registry("PARTS")

    class Inner:
        def __init__(self, depth: int = 1, width: int = 2):
            self.depth, self.width = depth, width

    @reg.register()
    @forwards(Inner)
    class Outer:
        def __init__(self, channels: int, scale: float = 1.0, **inner):
            self.inner = call(Inner, inner)

    @reg.register()
    class Open:  # **kwargs without a declaration: nothing to check against
        def __init__(self, **anything):
            self.anything = anything

    assert build(reg, {"name": "Outer", "depth": 3}, 8).inner.depth == 3
    with pytest.raises(ConfigError, match=r"Unknown config key 'part.dpeth': Outer takes no argument 'dpeth'; "
                                          r"did you mean 'part.depth', 'part.width'\? valid keys of part: scale, depth, width"):
        build(reg, {"name": "Outer", "dpeth": 3}, 8, key="part")
    with pytest.raises(ConfigError, match="cannot be set: the code that builds Outer passes 'channels'"):
        build(reg, {"name": "Outer", "channels": 3}, 8)
    assert build(reg, {"name": "Open", "whatever": 1}).anything == {"whatever": 1}
    with pytest.raises(ConfigError, match="No object named 'Outr' in the PARTS registry.*did you mean 'Outer'"):
        build(reg, {"name": "Outr"})
    check_arguments(Inner, "Inner", {"depth": 1}, (), {}, "x")


def _shipped_configs() -> list[Path]:
    return sorted(p for p in (REPO / "configs").rglob("*.py") if "_base_" not in p.parts)


@pytest.mark.parametrize("path", _shipped_configs(), ids=lambda p: str(p.relative_to(REPO / "configs")))
def test_every_shipped_config_loads_and_builds(path, tmp_path, monkeypatch):
    import data_schedule  # noqa: F401  (mappers)
    import evaluators  # noqa: F401

    if "SAM2_SITE_CHECKPOINT" in path.read_text():  # starts from a local SAM2 file: write one of the right shape
        from models.sam2.build import build_sam2_video_model

        torch.save({"model": build_sam2_video_model("cpu_tiny", image_size=128).state_dict()}, tmp_path / "s.pth")
        monkeypatch.setenv("SAM2_SITE_CHECKPOINT", str(tmp_path / "s.pth"))
    cfg = load_config(path)
    # paper-scale models too, without allocating their weights; the sam2 package's Hiera calls .item() while it is
    # built, which a meta tensor refuses, so SAM2 models (at most Hiera-T's 39 M parameters here) build on the CPU
    with torch.device("cpu" if "sam2" in cfg.model else "meta"):
        model = build(MODELS, cfg.model)
    build_scheduler(build_optimizer(model, cfg.optim), cfg.optim.scheduler, int(cfg.train.max_iter))
    entries = [e for e in cfg.data.evaluate if not isinstance(e, str)]
    for node in (cfg.data.train_mapper, cfg.data.eval_mapper, cfg.data.unlabeled.mapper,
                 *(e.get("mapper") for e in entries)):
        if node is not None:
            build(MAPPERS, node, num_classes=4)
    evs = [cfg.data.evaluator] if cfg.data.evaluator is not None else []
    for e in entries:  # whole-video entries name their own evaluator(s)
        got = e.get("evaluator")
        evs += [] if got is None else list(got) if OmegaConf.is_list(got) else [got]
    assert evs, f"{path}: no evaluator (data.evaluator or an entry's)"
    for node in evs:
        ev = OmegaConf.to_container(node)
        check_arguments(EVALUATORS.get(ev.pop("name")), "evaluator", ev, (), {}, "data.evaluator")


def _readme_config_blocks() -> list[str]:
    text = (REPO / "README.md").read_text()
    section = text[text.index("\n## Configs"):text.index("\n## Models")]
    return re.findall(r"```python\n(# configs/[^\n]*\n.*?)```", section, flags=re.S)


def test_the_readme_config_examples_load_and_build(tmp_path):
    blocks = _readme_config_blocks()
    assert len(blocks) >= 2
    for i, block in enumerate(blocks):
        folder = REPO / block.splitlines()[0].split()[1].rstrip(":").rsplit("/", 1)[0]
        path = tmp_path / f"readme_{i}.py"
        path.write_text(block.replace('"./', f'"{folder}/'))
        cfg = load_config(path)
        with torch.device("meta"):
            build(MODELS, cfg.model)


def test_tiny_training_still_runs_with_an_added_key(synth_root, tiny_config, tmp_path):
    out = tmp_path / "run"
    assert cli.main(["--config_file", str(tiny_config), "--output_dir", str(out), *TINY_OVERRIDES,
                     "train.max_iter=1", "train.eval_period=-1", "+train.note=x"]) == 0
    assert "+note: x" in (out / "config.yaml").read_text()
    assert cli.main(["--config_file", str(out / "config.yaml"), "--output_dir", str(out),
                     "--trainer_mode", "train_resume", "train.max_iter=2"]) == 0
