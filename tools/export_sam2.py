#!/usr/bin/env python
"""Write the SAM2 of a trained run as a package-format SAM2 checkpoint (``{"model": state_dict}``, what
``sam2.build_sam`` and ``model.sam2.checkpoint`` read), e.g. to start LoRA adaptation or zero-shot SAMURAI from it.

    python tools/export_sam2.py output/sam2_tiny_site/checkpoints/model_final.pth output/sam2_tiny_site/sam2.pth

Takes a checkpoint of a SAM2, SAMURAI or BoxSAM2 run trained with its full state (``sam2_train`` "full",
"decoder" or "frozen"; a LoRA run's adapters are not merged: export the run it started from). Never overwrites an
existing file unless ``--overwrite``. Prints the config preset and image size the file fits.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PREFIX = "sam2.model."  # the adapter's SAM2 inside SAM2 / SAMURAI / BoxSAM2


def export(ckpt_path: str | Path, out_path: str | Path, overwrite: bool = False) -> dict:
    """Extract and save; returns {"keys", "config", "image_size"}. Errors are one line (CheckpointError)."""
    from core.checkpoint import load_checkpoint, save_atomic
    from core.errors import CheckpointError

    ckpt_path, out_path = Path(ckpt_path), Path(out_path)
    if out_path.exists() and not overwrite:
        raise CheckpointError(f"{out_path} exists; pass --overwrite to replace it")
    ckpt = load_checkpoint(ckpt_path)
    if ckpt.get("model_state", "full") == "trainable":
        raise CheckpointError(f"{ckpt_path} holds only the trained part of its model (train.checkpoint.state="
                              f"'trainable'); export the checkpoint its frozen base came from")
    state = {k[len(PREFIX):]: v for k, v in ckpt["model"].items() if k.startswith(PREFIX)}
    if not state:
        raise CheckpointError(f"{ckpt_path}: no SAM2 weights ({PREFIX}*) in a {ckpt.get('model_name')!r} checkpoint")
    lora = [k for k in state if "lora_" in k or ".base_layer." in k]
    if lora:
        raise CheckpointError(f"{ckpt_path}: the SAM2 carries LoRA adapters ({lora[0]}, ...); export the run it "
                              f"was adapted from")
    sam2_cfg = dict((ckpt.get("config") or {}).get("model", {}).get("sam2") or {})
    save_atomic({"model": state}, out_path)
    return {"keys": len(state), "config": sam2_cfg.get("config", "cpu_tiny"),
            "image_size": sam2_cfg.get("image_size", 128)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint", help="a run's checkpoint (checkpoints/model_final.pth)")
    ap.add_argument("out", help="the SAM2 checkpoint file to write")
    ap.add_argument("--overwrite", action="store_true")
    args = ap.parse_args(argv)
    from core.errors import MedVidSegError

    try:
        info = export(args.checkpoint, args.out, args.overwrite)
    except MedVidSegError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}: {info['keys']} SAM2 tensors; use with model.sam2=dict(config={info['config']!r}, "
          f"image_size={info['image_size']}, checkpoint={args.out!r})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
