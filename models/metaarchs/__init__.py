from . import arseg, box_sam2, lgrnet, lgsd, sam2_incontext, sam2_tracker, unet_baseline, universeg  # noqa: F401
