# Shared training runtime: loop length, optimiser, LR schedule, logging. Values are for CPU-sized runs.
train = dict(
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
    find_unused_parameters=False,
)
optim = dict(
    name="AdamW",
    base_lr=1e-3,
    weight_decay=1e-4,
    betas=[0.9, 0.999],
    lr_multipliers={},        # {"parameter.name.prefix": multiplier}, longest prefix wins
    no_decay_norm_bias=True,
    scheduler=dict(name="warmup_cosine", warmup_iters=100, warmup_factor=0.001, min_lr_ratio=0.01),
)
log = dict(
    tensorboard=True,
    wandb=dict(enabled=True, mode="offline", project="medvidseg"),  # offline: files under <run>/wandb only
)
