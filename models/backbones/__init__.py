"""Backbones: timm models by name, returning multi-scale feature maps."""
from . import timm_backbone  # noqa: F401
