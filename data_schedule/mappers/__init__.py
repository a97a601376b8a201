from .clip_mapper import ClipEvalMapper, ClipTrainMapper  # noqa: F401
from .lgsd_views import LGSDViewMapper  # noqa: F401
from .incontext import InContextEvalMapper, InContextTrainMapper  # noqa: F401
