"""Models: meta-architectures (one file per method) built from reusable backbones, heads, losses and ops."""
from . import backbones, decoders, encoders, losses, metaarchs  # noqa: F401
