"""Embedded datasets generated on demand (no download needed). See :mod:`.echo_synth`."""
from .echo_synth import (CLASS_NAMES, DATASET_DIRNAME, SITE_NAMES, ensure_echo_synth, generate_echo_synth,
                         render_video, resolve_params)

__all__ = ["CLASS_NAMES", "DATASET_DIRNAME", "SITE_NAMES", "ensure_echo_synth", "generate_echo_synth",
           "render_video", "resolve_params"]
