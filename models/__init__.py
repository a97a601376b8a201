"""Models: meta-architectures (one file per method) built from reusable backbones, heads, losses and ops."""
from . import base  # noqa: F401  (the model protocol, first: the meta-architectures derive from it)
from . import arseg, backbones, decoders, encoders, losses, metaarchs  # noqa: F401
