"""LoRA on a SAM2 model's Linear layers with ``peft`` (``inject_adapter_in_model``: no PeftModel wrapper, the
model keeps its own class and methods, so ``SAM2VideoAdapter`` drives it unchanged).

    add_lora(model, target="attention", r=8, alpha=16)     # q/k/v/out projections of memory attention + mask decoder
    state = lora_state_dict(model)                          # the adapters alone (what a checkpoint needs to keep)
    load_lora_state_dict(other_model_with_lora, state)      # identical predictions

``target``: a preset name (``LORA_PRESETS``), a regex that must match a module's full name (peft's string form), or
a list of name suffixes (peft's list form). A target that matches no Linear layer fails with one line naming the
closest Linear layers. In ``sam2.1_hiera_t`` the presets match 32 memory-attention and 28 mask-decoder Linears
(r 8: 212,992 parameters); Hiera's fused ``attn.qkv`` is left alone (LoRA there gave little, facebookresearch/sam2#358).
"""
from __future__ import annotations

import difflib
import re

import torch
from torch import nn

from core.errors import CheckpointError, ConfigError

_PROJ = r"(q_proj|k_proj|v_proj|out_proj)"
LORA_PRESETS: dict[str, str] = {
    "memory_attention": rf"memory_attention\..*\.{_PROJ}",
    "mask_decoder": rf"sam_mask_decoder\.transformer\..*\.{_PROJ}",
    "attention": rf"(memory_attention|sam_mask_decoder\.transformer)\..*\.{_PROJ}",
    # seed 003's recipe (SAMURAI fine-tuned on CAMUS): layers 0-1 of the mask decoder's two-way transformer
    # (self-attention, token->image and image->token cross-attention) and of memory attention (self-attention and
    # image cross-attention); q/k/v/out projections. Use with r 8, alpha 8, dropout 0 (SAMURAI_LORA).
    "samurai": (rf"(sam_mask_decoder\.transformer\.layers\.[01]\.(self_attn|cross_attn_token_to_image|"
                rf"cross_attn_image_to_token)|memory_attention\.layers\.[01]\.(self_attn|cross_attn_image))\.{_PROJ}"),
}
#: seed 003's LoRA settings (peft LoraConfig: r 8, lora_alpha 8, lora_dropout 0, bias "none" = peft's default)
SAMURAI_LORA = {"target": "samurai", "r": 8, "alpha": 8.0, "dropout": 0.0}


def _matches(name: str, target: str | list[str]) -> bool:
    """peft's rule: a string is a full-match regex, a list holds name suffixes."""
    if isinstance(target, str):
        return re.fullmatch(target, name) is not None
    return any(name == t or name.endswith("." + t) for t in target)


def lora_targets(model: nn.Module, target: str | list[str], layer_types: tuple[type, ...] = (nn.Linear,),
                 presets: dict[str, str] | None = None) -> list[str]:
    """Names of the layers of ``layer_types`` (Linear for SAM2; UniverSeg passes Conv2d) that ``target`` (a preset,
    regex or suffix list) selects; none is an error naming the closest such layers."""
    presets = LORA_PRESETS if presets is None else presets
    target = presets.get(target, target) if isinstance(target, str) else list(target)
    kind = "/".join(t.__name__ for t in layer_types)
    layers = [n for n, m in model.named_modules() if isinstance(m, layer_types) and "lora_" not in n]
    hits = [n for n in layers if _matches(n, target)]
    missing = [t for t in target if not any(_matches(n, [t]) for n in layers)] if isinstance(target, list) else []
    if not hits or missing:
        what = missing or [target]
        pool = layers if isinstance(target, str) else sorted({n.split(".")[-1] for n in layers} | set(layers))
        near = difflib.get_close_matches(str(what[0]), pool, n=4, cutoff=0.0)
        raise ConfigError(f"LoRA target {what[0]!r} matches no {kind} layer of {type(model).__name__}; closest: "
                          f"{', '.join(near)} (presets: {', '.join(presets)})")
    return hits


def add_lora(model: nn.Module, target: str | list[str] = "attention", r: int = 8, alpha: float = 16.0,
             dropout: float = 0.0, freeze_base: bool = True, layer_types: tuple[type, ...] = (nn.Linear,),
             presets: dict[str, str] | None = None) -> nn.Module:
    """Inject LoRA adapters (in place; returns ``model``). ``freeze_base``: only the adapters train (peft's
    default); False leaves the base parameters' ``requires_grad`` as they were."""
    from peft import LoraConfig, inject_adapter_in_model

    names = lora_targets(model, target, layer_types, presets)
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    inject_adapter_in_model(LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=names), model)
    if not freeze_base:
        for n, p in model.named_parameters():
            p.requires_grad_(flags.get(n.replace(".base_layer", ""), p.requires_grad) or "lora_" in n)
    return model


def lora_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The LoRA adapter weights alone (``get_peft_model_state_dict``), detached CPU copies."""
    from peft import get_peft_model_state_dict

    return {k: v.detach().cpu().clone() for k, v in get_peft_model_state_dict(model).items()}


def load_lora_state_dict(model: nn.Module, state: dict[str, torch.Tensor], source: str = "state dict") -> None:
    """Load adapters saved by ``lora_state_dict`` into a model that ``add_lora`` prepared with the same target and
    rank; adapters that do not fit raise ``CheckpointError`` naming a few keys."""
    from peft import set_peft_model_state_dict

    own = {k for k in model.state_dict() if "lora_" in k}
    if not own:
        raise CheckpointError(f"LoRA {source}: the model has no LoRA adapters (call add_lora first)")
    try:
        result = set_peft_model_state_dict(model, state)
    except RuntimeError as e:  # size mismatch (another rank)
        raise CheckpointError(f"LoRA {source} does not fit the model's adapters: "
                              f"{str(e).splitlines()[1 if len(str(e).splitlines()) > 1 else 0].strip()[:200]}") from None
    unexpected = list(result.unexpected_keys)
    missing = [k for k in result.missing_keys if "lora_" in k]
    if unexpected or missing:
        raise CheckpointError(f"LoRA {source} does not fit the model's adapters: {len(missing)} missing "
                              f"({', '.join(missing[:3])}), {len(unexpected)} unexpected ({', '.join(unexpected[:3])})")
