"""Autoregressive segmentation (AR-SEG, seed 000's decoder-only design): mask tokenisers (``tokenizers.py``) and
the prefix-LM transformer with its KV cache (``transformer.py``); the meta-architecture is
``models/metaarchs/arseg.py``."""
from . import tokenizers, transformer  # noqa: F401
