"""Logging: colour on a terminal (rank 0), plain text in ``<run>/log.txt``; other ranks log warnings only."""
from __future__ import annotations

import logging
import sys
from pathlib import Path

_COLOURS = {logging.WARNING: "\033[33m", logging.ERROR: "\033[31m", logging.CRITICAL: "\033[31;1m"}


class _ColourFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        msg = super().format(record)
        colour = _COLOURS.get(record.levelno)
        prefix = "\033[32m" + self.formatTime(record, "%m/%d %H:%M:%S") + "\033[0m "
        return prefix + (f"{colour}{msg}\033[0m" if colour else msg)


def setup_logger(output_dir: str | Path | None = None, rank: int = 0, name: str = "") -> logging.Logger:
    """Configure the root logger once per process: console + ``log.txt`` (rank 0 only)."""
    root = logging.getLogger(name)
    root.setLevel(logging.INFO)
    for h in list(root.handlers):
        if getattr(h, "_medvidseg", False):
            root.removeHandler(h)
            h.close()
    plain = logging.Formatter("[%(asctime)s %(name)s %(levelname)s] %(message)s", "%m/%d %H:%M:%S")
    console = logging.StreamHandler(sys.stdout)
    console.setLevel(logging.INFO if rank == 0 else logging.WARNING)
    console.setFormatter(_ColourFormatter("%(message)s") if sys.stdout.isatty() else plain)
    console._medvidseg = True
    root.addHandler(console)
    if output_dir is not None and rank == 0:
        Path(output_dir).mkdir(parents=True, exist_ok=True)
        fh = logging.FileHandler(Path(output_dir) / "log.txt")
        fh.setFormatter(plain)
        fh._medvidseg = True
        root.addHandler(fh)
    for noisy in ("fvcore", "iopath", "PIL", "matplotlib", "urllib3", "timm"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return root


def log_exception_to_file() -> None:
    """Write the exception being handled, with its traceback, to ``log.txt`` (the console gets Python's own
    report as the exception propagates): a bug must leave its traceback in the run directory too."""
    record = logging.LogRecord("medvidseg", logging.ERROR, __file__, 0,
                               "Unexpected error (a bug, not bad input); its traceback:", None, sys.exc_info())
    for h in logging.getLogger().handlers:
        if isinstance(h, logging.FileHandler) and getattr(h, "_medvidseg", False):
            h.handle(record)
