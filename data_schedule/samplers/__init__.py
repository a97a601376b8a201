from . import frame_samplers  # noqa: F401
from .index_samplers import InferenceSampler, TrainingSampler  # noqa: F401
