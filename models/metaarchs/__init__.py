from . import lgrnet, unet_baseline  # noqa: F401
