# SAM2 in-context segmentation (seed 001) on the embedded synthetic CT: the support slices of one training volume
# (fixed_volume, seed 001's protocol) enter SAM2's memory as conditioning frames with their GT masks; the query
# volume's slices are propagated through them, one class at a time. The adapter's cpu_tiny SAM2 (random init: no
# SAM2 weights can be downloaded; a local sam2.1 checkpoint goes in model.sam2.checkpoint) with 7 memories (SAM2's
# num_maskmem: the support + the 6 memories a selector chooses among the query's past slices). Trained with seed
# 001's single-class protocol (one class per sample, 8 query slices and 4 support slices containing it); evaluated
# on whole test volumes with 3D Dice / HD95 per class. The selector and support-size ablation:
# benchmarks/incontext_ablation.py.
_base_ = ["../_base_/runtime.py"]
_support = dict(name="fixed_volume", dataset="ct_synth_train")  # its first volume supports every query
_window = [dict(name="IntensityWindow", low=-160, high=240)]    # abdominal soft-tissue window (HU)
model = dict(
    name="SAM2InContext",
    num_classes=4,
    sam2=dict(config="cpu_tiny", image_size=128, checkpoint=None, overrides={"model.num_maskmem": 7}),
    memory_selector=None,       # SAM2's recency rule; dict(name="score" / "similarity" / "oracle" / "recent")
    sam2_train="full",
)
train = dict(max_iter=1500, eval_period=500, checkpoint_period=500, batch_size=2, find_unused_parameters=True)
optim = dict(base_lr=1e-3, scheduler=dict(warmup_iters=50))
data = dict(
    train=["ct_synth_train"],
    roots=dict(ct_synth=None),  # None: $CT_SYNTH_ROOT / datasets (generated there on first use)
    num_workers=2,
    train_mapper=dict(name="InContextTrainMapper", clip_len=8, size=[128, 128], support=_support,
                      support_size=4, slices="random", transforms=_window),
    evaluate=[dict(name="ct_synth_test", tag="ct_synth_test_volume", per_video=True,
                   mapper=dict(name="InContextEvalMapper", size=[128, 128], support=_support,
                               support_size=4, transforms=_window),
                   evaluator=dict(name="VolumeSegEvaluator"))],
)
