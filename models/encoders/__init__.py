"""Encoders: LGRNet's local-global encoder and its parts (Hilbert selective scan over frame queries)."""
from . import hilbert_scan, local_global  # noqa: F401
