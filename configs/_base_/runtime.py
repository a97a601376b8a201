# Shared training runtime (loop length, optimiser, LR schedule, logging) for CPU-sized runs. Every key of `train`,
# `optim`, `log` and `data`, with its default and meaning, is in core/defaults.py, the implicit first base of
# every config; the runs in configs/ use those defaults as they are, so this file sets nothing. An ablation
# states only what differs, e.g. `train = dict(max_iter=600)`.
