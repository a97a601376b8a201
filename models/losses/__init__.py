from .seg_losses import CEDiceLoss  # noqa: F401
from .mask_set_criterion import VideoSetCriterion  # noqa: F401
