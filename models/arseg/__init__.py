"""Autoregressive segmentation (AR-SEG, seed 000's decoder-only design): mask tokenisers first (``tokenizers.py``)."""
from . import tokenizers  # noqa: F401
