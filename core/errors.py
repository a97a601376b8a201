"""MedVidSeg's own error types. ``main.py`` prints exactly these as one line (``error: ...``, exit code 1); every
other exception is a bug and keeps its traceback, on the console and in ``log.txt``."""
from __future__ import annotations


class MedVidSegError(Exception):
    """Bad input (a config, a checkpoint, a dataset, a command line): the message is one line that names the
    file, key or value and what was expected."""

    __str__ = Exception.__str__  # a subclass that is also a KeyError must not print its message in quotes


class TrainingError(MedVidSegError, FloatingPointError):
    """Training cannot go on (a non-finite loss under ``train.nonfinite.policy="error"``); the last checkpoint is
    kept."""


class CheckpointError(MedVidSegError, ValueError):
    """A checkpoint that cannot be used (missing, corrupt, foreign, or written for another model config); the
    message names the file and the reason (for a config mismatch: a few of the missing and unexpected keys)."""


class ConfigError(MedVidSegError, ValueError, KeyError):
    """A config file, override or component argument is wrong. Also a ValueError and a KeyError, which is what
    the same checks raised before they had their own type, so code catching those keeps working."""
