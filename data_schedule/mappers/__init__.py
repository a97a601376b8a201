from .clip_mapper import ClipEvalMapper, ClipTrainMapper  # noqa: F401
