from . import unet_baseline  # noqa: F401
