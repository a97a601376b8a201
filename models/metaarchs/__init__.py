from . import lgrnet, lgsd, unet_baseline  # noqa: F401
