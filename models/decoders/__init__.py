"""Decoders: pixel decoder (FPN to stride 4) and the Mask2Former-style video mask decoder."""
from . import mask2former_video, pixel_fpn  # noqa: F401
