"""Build a SAM2 video model from the ``sam2`` package's own yaml, without Hydra's global state.

    model = build_sam2_video_model("sam2.1_hiera_t", image_size=256)              # random init
    model = build_sam2_video_model("cpu_tiny", image_size=128)                     # the small CPU configuration
    model = build_sam2_video_model("sam2.1_hiera_s", checkpoint="sam2.1_hiera_small.pt",
                                   overrides={"model.memory_attention.num_layers": 2})

Returns a ``models.sam2.samurai.MotionAwareSAM2`` (a subclass of the package's ``SAM2VideoPredictor``: a
``SAM2Base`` with the interactive API, plus SAMURAI's optional motion model and memory selector) in ``eval()``
mode. ``models/sam2/video.py`` drives it on tensors, with gradients.

Why not ``sam2.build_sam``: it composes the config through Hydra's global config module, which ``import sam2``
initialises process-wide (a clash with any other Hydra user). Here the yaml is read with ``OmegaConf.load`` from the
installed package's files and built with ``hydra.utils.instantiate(cfg.model)``; the global Hydra instance that
``import sam2`` creates is cleared again unless someone else had made it (``import_sam2``). Code that wants the
package's own ``sam2.build_sam`` after that must call ``hydra.initialize_config_module("sam2", version_base="1.2")``
itself.

The package's post-processing (hole filling, dynamic multimask, binarised memories) is off by default:
``fill_hole_area`` needs the ``sam2._C`` CUDA extension, which a CPU install (``SAM2_BUILD_CUDA=0``) lacks.
"""
from __future__ import annotations

import importlib
import importlib.util
import inspect
from pathlib import Path
from typing import Any, Mapping

import torch

from core.errors import CheckpointError, ConfigError
from core.registry import closest

PACKAGE_CONFIGS = ("sam2.1_hiera_t", "sam2.1_hiera_s", "sam2.1_hiera_b+", "sam2.1_hiera_l")

# The small CPU configuration: sam2.1_hiera_t with a 5-block, 16-dim Hiera trunk (stages 1-1-2-1, one global
# block), a 64-dim model (neck, memory attention, prompt encoder and mask decoder share ``hidden_dim`` = the neck's
# d_model), 32-dim memories, one memory-attention layer and 3 memory frames. Everything else (object pointers, object
# scores, multimask tracking) is the package's. 1,347,458 parameters (sam2.1_hiera_t: 38,962,498), 0.74 M of them
# in the mask decoder, whose transformer widths (MLP 2048, 8 heads) ``SAM2Base`` hard-codes. 4 objects at 128²:
# 30-39 frames/s inference, 0.4-1 s per training iteration of an 8-frame clip, on one thread of a busy 2-core
# machine (benchmarks/sam2_adapter.py).
_D, _E = 64, 16  # hidden dim (d_model) and Hiera's first-stage embed dim
CPU_TINY_OVERRIDES: dict[str, Any] = {
    "model.image_encoder.trunk.embed_dim": _E,
    "model.image_encoder.trunk.num_heads": 1,
    "model.image_encoder.trunk.stages": [1, 1, 2, 1],
    "model.image_encoder.trunk.global_att_blocks": [3],
    "model.image_encoder.trunk.window_pos_embed_bkg_spatial_size": [4, 4],
    "model.image_encoder.trunk.window_spec": [8, 4, 4, 2],
    "model.image_encoder.neck.d_model": _D,
    "model.image_encoder.neck.backbone_channel_list": [8 * _E, 4 * _E, 2 * _E, _E],
    "model.image_encoder.neck.position_encoding.num_pos_feats": _D,
    "model.memory_attention.d_model": _D,
    "model.memory_attention.num_layers": 1,
    "model.memory_attention.layer.d_model": _D,
    "model.memory_attention.layer.dim_feedforward": 4 * _D,
    "model.memory_attention.layer.self_attention.embedding_dim": _D,
    "model.memory_attention.layer.cross_attention.embedding_dim": _D,
    "model.memory_attention.layer.cross_attention.kv_in_dim": 32,
    "model.memory_encoder.in_dim": _D,
    "model.memory_encoder.out_dim": 32,
    "model.memory_encoder.position_encoding.num_pos_feats": 32,
    "model.memory_encoder.mask_downsampler.embed_dim": _D,
    "model.memory_encoder.fuser.layer.dim": _D,
    "model.memory_encoder.fuser.num_layers": 1,
    "model.num_maskmem": 3,
}
PRESETS: dict[str, tuple[str, dict[str, Any]]] = {"cpu_tiny": ("sam2.1_hiera_t", CPU_TINY_OVERRIDES)}


def import_sam2() -> None:
    """Import the ``sam2`` package, undoing the global Hydra initialisation its ``__init__`` performs (unless Hydra
    was already initialised by someone else, whose state we leave alone)."""
    from hydra.core.global_hydra import GlobalHydra

    had_hydra = GlobalHydra.instance().is_initialized()
    importlib.import_module("sam2.sam2_video_predictor")  # runs sam2/__init__.py: initialize_config_module("sam2")

    if not had_hydra and GlobalHydra.instance().is_initialized():
        GlobalHydra.instance().clear()


def package_config_path(name: str) -> Path:
    """Path of ``sam2/configs/sam2.1/<name>.yaml`` in the installed package (found without importing it)."""
    if name not in PACKAGE_CONFIGS:
        raise ConfigError(f"sam2 config {name!r} is not one of the package's configs; valid: "
                          f"{', '.join(PACKAGE_CONFIGS + tuple(PRESETS))}")
    spec = importlib.util.find_spec("sam2")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("the 'sam2' package is not installed (make venv installs it: SAM2_BUILD_CUDA=0 pip install "
                          "--no-build-isolation sam2==1.1.0)")
    return Path(list(spec.submodule_search_locations)[0]) / "configs" / "sam2.1" / f"{name}.yaml"


def check_image_size(image_size: Any) -> int:
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 32 or image_size % 32:
        raise ConfigError(f"image_size must be a positive multiple of 32 (Hiera's patch and window grid), got "
                          f"{image_size!r}")
    return image_size


def _target_arguments(node: Any) -> list[str]:
    """Constructor arguments of a config node's ``_target_`` class (keys one may add that the yaml does not set),
    following ``**kwargs`` up the class hierarchy (MotionAwareSAM2 -> SAM2VideoPredictor -> SAM2Base)."""
    from hydra.utils import get_class

    target = node.get("_target_") if hasattr(node, "get") else None
    if not target:
        return []
    names: list[str] = []
    for cls in get_class(target).__mro__:
        if "__init__" not in vars(cls):
            continue
        params = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
        names += [p for p in params if p not in ("args", "kwargs") and p not in names]
        if "kwargs" not in params:
            break
    return names


def apply_overrides(cfg: Any, overrides: Mapping[str, Any], source: str) -> None:
    """Set dotted ``overrides`` on the package config; a key must exist in the yaml or be a constructor argument of
    its parent's ``_target_`` (so a misspelt key fails with the closest names instead of being added silently)."""
    from omegaconf import DictConfig, OmegaConf

    for dotted, value in overrides.items():
        *parents, leaf = dotted.split(".")
        node = cfg
        for i, part in enumerate(parents):
            if not isinstance(node, DictConfig) or part not in node:
                valid = list(node.keys()) if isinstance(node, DictConfig) else []
                raise ConfigError(f"sam2 override {dotted!r}: {'.'.join(parents[:i + 1])!r} is not in {source}; "
                                  f"closest: {closest(part, valid) or valid}")
            node = node[part]
        valid = list(node.keys()) + _target_arguments(node)
        if leaf not in valid:
            raise ConfigError(f"sam2 override {dotted!r}: {leaf!r} is neither in {source} nor an argument of "
                              f"{node.get('_target_', 'this node')}; closest: {closest(leaf, valid) or valid}")
        OmegaConf.update(cfg, dotted, value, merge=False, force_add=True)


def load_checkpoint_into(model: torch.nn.Module, path: str | Path, config: str, n_show: int = 3) -> None:
    """Load a local SAM2 checkpoint (the package's ``{"model": state_dict}`` or a bare state dict) strictly: a
    missing file, or keys / shapes that do not match the built config, raise ``CheckpointError`` naming a few."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"sam2 checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001  (a truncated or foreign file: one line, not a pickle traceback)
        raise CheckpointError(f"sam2 checkpoint {path} cannot be read ({type(e).__name__}: "
                              f"{str(e).splitlines()[0][:120]})") from None
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise CheckpointError(f"sam2 checkpoint {path} holds no state dict (expected {{'model': state_dict}})")
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
              if k in state and state[k].shape != v.shape]
    if missing or unexpected or shapes:
        def few(keys: list[str]) -> str:
            return ", ".join(keys[:n_show]) + (f", ... ({len(keys)} in all)" if len(keys) > n_show else "")
        parts = [f"{len(missing)} missing ({few(missing)})" if missing else "",
                 f"{len(unexpected)} unexpected ({few(unexpected)})" if unexpected else "",
                 f"{len(shapes)} of another shape ({few(shapes)})" if shapes else ""]
        raise CheckpointError(f"sam2 checkpoint {path} does not match config {config}: "
                              f"{'; '.join(p for p in parts if p)}")
    model.load_state_dict(state)


def build_sam2_video_model(config: str = "sam2.1_hiera_t", image_size: int = 1024, checkpoint: str | None = None,
                           overrides: Mapping[str, Any] | None = None, apply_postprocessing: bool = False,
                           device: str | torch.device = "cpu") -> torch.nn.Module:
    """A ``SAM2VideoPredictor`` in eval mode.

    config: a package config (``sam2.1_hiera_t`` / ``_s`` / ``_b+`` / ``_l``) or a preset (``cpu_tiny``: the
        package's ``t`` yaml plus ``CPU_TINY_OVERRIDES``). image_size: a multiple of 32 (the frames are resized to
        image_size² by the adapter). checkpoint: None = random init (nothing is downloaded), else a local file that
        must match the config exactly. overrides: dotted keys on the package yaml (``model.num_maskmem``: 5),
        applied after the preset's. apply_postprocessing: the package's demo post-processing (needs ``sam2._C``).
    """
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    image_size = check_image_size(image_size)
    yaml_name, preset = PRESETS.get(config, (config, {}))
    yaml_path = package_config_path(yaml_name)
    import_sam2()
    cfg = OmegaConf.load(yaml_path)
    # MotionAwareSAM2 (models/sam2/samurai.py) is the package's SAM2VideoPredictor unless given a motion model or
    # a memory selector; same parameters and state dict
    extra: dict[str, Any] = {"model._target_": "models.sam2.samurai.MotionAwareSAM2",
                             "model.image_size": image_size}
    if apply_postprocessing:
        if importlib.util.find_spec("sam2._C") is None:
            raise ConfigError("apply_postprocessing=True needs the sam2._C CUDA extension, which this install lacks "
                              "(built with SAM2_BUILD_CUDA=0); use apply_postprocessing=False")
        extra.update({"model.sam_mask_decoder_extra_args": {"dynamic_multimask_via_stability": True,
                                                            "dynamic_multimask_stability_delta": 0.05,
                                                            "dynamic_multimask_stability_thresh": 0.98},
                      "model.binarize_mask_from_pts_for_mem_enc": True, "model.fill_hole_area": 8})
    apply_overrides(cfg, {**preset, **extra, **(overrides or {})}, source=yaml_path.name)
    OmegaConf.resolve(cfg)
    model = instantiate(cfg.model, _recursive_=True)
    if checkpoint is not None:
        load_checkpoint_into(model, checkpoint, config)
    return model.to(device).eval()


def count_parameters(model: torch.nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
