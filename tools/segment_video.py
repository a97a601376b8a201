#!/usr/bin/env python
"""Segment whole videos with a trained checkpoint, in temporal windows (memory bounded for any length), and
write the labels in the dataset's own format; score the annotated frames when a label file exists.

    python tools/segment_video.py --eval_path output/demo/checkpoints/model_final.pth \
        --video datasets/echo_synth/cardiacUDC_dataset/Site_G_29/patient-12-4_image.nii.gz [--window 16 --overlap 4]

Frames go through the checkpoint's eval-mapper ``transforms`` (CardiacUDC: the fan crop), the predictions back
through their inverses, so ``<out_dir>/<video>_pred.nii.gz`` (int8) has the input's (W, H, T) layout and size (outside
the fan crop is background). Prints per-class Dice over the annotated frames of ``<video>_label.nii.gz`` if present.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _class_names(cfg, k: int) -> list[str]:
    """The class names of the checkpoint's evaluation data (MetadataCatalog), else 1..K."""
    import data_schedule  # noqa: F401  (registers the catalog names and their metadata)
    from core.catalog import DatasetCatalog, MetadataCatalog

    for name in list(cfg.data.get("evaluate") or []) + list(cfg.data.get("train") or []):
        name = name if isinstance(name, str) else name.get("name")
        classes = getattr(MetadataCatalog.get(name), "classes", None) if name in DatasetCatalog else None
        if classes and len(classes) == k:
            return list(classes)
    return [str(i) for i in range(1, k + 1)]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--eval_path", required=True, help="checkpoint file (its stored config builds the model)")
    p.add_argument("--video", nargs="+", required=True, help="*_image.nii.gz files")
    p.add_argument("--window", type=int, default=16, help="frames per window")
    p.add_argument("--overlap", type=int, default=4, help="frames shared by consecutive windows")
    p.add_argument("--out_dir", default=None, help="default: <run>/segment_video")
    args = p.parse_args(argv)

    import nibabel as nib
    import numpy as np

    import models  # noqa: F401
    from core.checkpoint import load_checkpoint
    from core.config import config_from_container
    from core.errors import MedVidSegError
    from data_schedule.registers.cardiac_udc import DEFAULT_TRANSFORMS
    from data_schedule.sources.nifti import load_video
    from data_schedule.transforms import build_transforms, transforms_for
    from evaluators.metrics import dice_iou, seg_stats
    from trainers.train_loop import default_device, load_model
    from trainers.video_inference import predict_video

    try:
        ckpt = load_checkpoint(args.eval_path)
        cfg = config_from_container(ckpt["config"], f"checkpoint {args.eval_path}")
        device = default_device()
        model = load_model(cfg, device, ckpt, args.eval_path)
        k = int(cfg.model.num_classes)
        ckpt_path = Path(args.eval_path)
        out_dir = Path(args.out_dir) if args.out_dir else ckpt_path.parent.parent / "segment_video"
        out_dir.mkdir(parents=True, exist_ok=True)
        tf_cfg = cfg.data.eval_mapper.get("transforms")
        configured = None if tf_cfg is None else build_transforms(tf_cfg, key="data.eval_mapper.transforms")
        for img_path in map(Path, args.video):
            lab_path = img_path.with_name(img_path.name.replace("_image", "_label"))
            video = load_video(img_path, lab_path if lab_path.exists() else None, num_classes=k)
            meta = dict(video_id=img_path.name, cache=video, default_transforms=DEFAULT_TRANSFORMS)
            frames = video.image()
            # no labels go in: a zero-strided stand-in of the frames' shape costs no memory
            dummy = np.broadcast_to(np.zeros((), np.int64), frames.shape[:3])
            steps = []
            for tf in transforms_for(meta, configured):
                steps.append((tf, frames.shape[1:3]))
                frames, dummy = tf(frames, dummy, meta)
            labels = predict_video(model, frames, tuple(cfg.data.eval_mapper.size), args.window,
                                   args.overlap, device=device, num_classes=k)  # T×h×w at the transformed size
            for tf, shape in reversed(steps):
                labels = tf.invert_labels(labels, meta, tuple(shape))
            full = labels.astype(np.int8)
            out = out_dir / img_path.name.replace("_image", "_pred")
            img = nib.Nifti1Image(full.transpose(2, 1, 0), np.eye(4))
            img.set_data_dtype(np.int8)
            nib.save(img, str(out))
            line = f"{img_path.name}: {video.num_frames} frames -> {out}"
            gt = video.labels()
            if gt:
                stats = [seg_stats(labels[t], np.asarray(g, np.int64), k) for t, g in gt.items()]
                dice, _ = dice_iou(*(np.stack(s) for s in zip(*stats)))
                per_class = np.nanmean(dice, axis=0)
                names = _class_names(cfg, k)
                line += f"  ({len(gt)} annotated frames: " + ", ".join(
                    f"Dice_{n} {v:.4f}" for n, v in zip(names, per_class)) + f", mDice {np.nanmean(per_class):.4f})"
            print(line, flush=True)
    except (MedVidSegError, FileNotFoundError, ValueError) as e:  # video_inference validates with ValueError
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
