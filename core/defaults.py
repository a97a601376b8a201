"""The framework's defaults: every key of the config sections MedVidSeg itself reads (``train``, ``optim``, ``log``,
``data``), with its default and meaning. They are the implicit first base of every config (``core.config``), so:

- a config file, a run's ``config.yaml`` or the config stored in a checkpoint may set only keys defined here or
  by one of its bases (``+key`` adds a key on purpose), and a misspelt key fails naming the closest valid ones;
- a key added here later (with the behaviour it had before as its default) leaves older configs and checkpoints
  valid, and resuming or evaluating them gives what it gave before.

Component dicts (those with a ``name``: mappers, the evaluator, the scheduler, the optimizer itself) are checked
against the registered component's signature when they are built, so their keys are not listed here; a file that
changes a component's ``name`` may set that component's own keys. ``model`` is all component: its keys are checked
against the constructors when the model is built. ``configs/_base_/runtime.py`` holds the values of CPU-sized runs.
"""
from __future__ import annotations

TRAIN = dict(
    max_iter=1000,            # iterations (optimizer steps); training never runs past this
    eval_period=500,          # evaluate every N iterations and after the last one (0: only at the end, -1: never)
    checkpoint_period=500,    # save checkpoints/model_<iter>.pth every N iterations; model_final.pth at the end
    keep_last=0,              # keep only the newest N periodic checkpoints (0: keep all)
    best_checkpoint=dict(metric="mDice", mode="max"),  # model_best.pth by this eval metric (metric=None: off)
    seed=42,
    batch_size=8,             # total over all processes (each of W processes loads batch_size / W)
    grad_accum=1,             # micro-batches per optimizer step
    clip_grad=dict(max_norm=1.0, norm_type=2.0),      # max_norm=0: no clipping
    amp=dict(enabled=True, dtype="float16", cpu_bf16=False),  # AMP on CUDA; bf16 autocast on CPU if cpu_bf16
    log_period=20,
    nonfinite=dict(policy="error", max_skips=10),  # non-finite loss: "error" stops, "skip" drops the step
    find_unused_parameters=False,  # DDP's find_unused_parameters
    checkpoint=dict(state="full"),  # "trainable": checkpoints hold the trained state only, the frozen base
                                    # named by its path and sha256 (core/checkpoint.py)
    hooks=[],                 # extra trainer hooks: [dict(name=<HOOKS entry>, ...its arguments)] (trainers/hooks.py)
)
OPTIM = dict(
    name="AdamW",             # a torch.optim class in the OPTIMIZERS registry: AdamW, Adam, SGD
    base_lr=1e-3,
    weight_decay=1e-4,        # not applied to biases, norms and parameters marked _no_weight_decay
    betas=[0.9, 0.999],       # Adam / AdamW only
    momentum=0.9,             # SGD only
    lr_multipliers={},        # {"parameter.name.prefix": multiplier}, longest prefix wins
    no_decay_norm_bias=True,
    scheduler=dict(name="warmup_cosine", warmup_iters=100, warmup_factor=0.001, min_lr_ratio=0.01),
)
LOG = dict(
    tensorboard=True,
    wandb=dict(enabled=True, mode="offline", project="medvidseg"),  # offline: files under <run>/wandb only
)
DATA = dict(
    train=[],                 # dataset names (DatasetCatalog) to train on
    evaluate=[],              # dataset names to evaluate on
    roots={},                 # {dataset family: folder}; None or absent: $DATASET_PATH / the embedded default
    num_workers=2,
    eval_batch_size=4,
    train_mapper=None,        # component dicts: dict(name=<MAPPERS entry>, ...its arguments)
    eval_mapper=None,
    evaluator=None,           # dict(name=<EVALUATORS entry>, ...)
    bad_sample_policy="error",  # a corrupt training video/sample: "error" stops naming it, "skip" leaves it out
    unlabeled=dict(names=[], ratio=0.0, mapper=None),  # unlabelled clips per labelled clip (LGSD); 0: none
)

DEFAULTS = dict(model=None, train=TRAIN, optim=OPTIM, log=LOG, data=DATA)

# Dicts whose keys are the user's (names, prefixes), not the framework's: never checked key by key.
FREE_FORM = ("data.roots", "optim.lr_multipliers")
