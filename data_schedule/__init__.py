"""Data: registers (catalog names), sources, curation, mappers, samplers, synthetic data. Import is side-effect
free on disk: it only records names."""
from . import mappers, registers, samplers, transforms  # noqa: F401
