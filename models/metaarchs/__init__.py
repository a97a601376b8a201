from . import box_sam2, lgrnet, lgsd, unet_baseline  # noqa: F401
