# Data: CAMUS (NIfTI release) under $DATASET_PATH/CAMUS or data.roots.camus, official 400/50/50 patient split.
# Train: every frame of each half sequence (both views); evaluate: the ED and ES frames, validation first
# (model_best.pth follows camus_val), then test. Mappers, loader and evaluator settings as in the base, but the
# frames are used whole (no fan crop, unlike the CardiacUDC base).
_base_ = ["./echo_synth_random.py"]
data = dict(train=["camus_train"], evaluate=["camus_val", "camus_test"], roots=dict(camus=None),
            train_mapper=dict(transforms=[]), eval_mapper=dict(transforms=[]))
