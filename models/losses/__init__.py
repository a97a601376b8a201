from .seg_losses import CEDiceLoss  # noqa: F401
