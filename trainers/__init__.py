from .build import build_optimizer, build_scheduler  # noqa: F401
from .train_loop import Trainer  # noqa: F401
