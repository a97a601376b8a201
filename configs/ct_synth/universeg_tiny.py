# UniverSeg (seed 004) on the embedded synthetic CT at CPU size: 32 features per level (the published network has
# 64: model.encoder=[64,64,64,64] model.decoder=[64,64,64]; REFERENCE §5.4), 64² slices. Episodic training: per
# sample one organ (the task), 4 query slices showing it and 8 support slices of it drawn at random from the other
# training volumes (random_slices), with in-task augmentation (every image its own affine / elastic / intensity /
# blur / noise draw) and task augmentation (one flip / inversion / edge-label / affine / intensity draw for the
# whole episode). Evaluated on whole test volumes (3D Dice / HD95 per organ), 8 support slices per organ.
# Support-size sweep and the comparison with SAM2 in-context and the U-Net: benchmarks/incontext_comparison.py.
_base_ = ["../_base_/runtime.py"]
_support = dict(name="random_slices", dataset="ct_synth_train", min_pixels=32)  # ≥ 8 px at 64²
_window = [dict(name="IntensityWindow", low=-160, high=240)]  # abdominal soft-tissue window (HU)
model = dict(name="UniverSeg", num_classes=4, encoder=[32, 32, 32, 32], decoder=[32, 32, 32], dice_weight=1.0,
             checkpoint=None, train_mode="full")  # adaptation: checkpoint=<a UniverSeg run>, train_mode="lora"
train = dict(max_iter=600, eval_period=300, checkpoint_period=300, batch_size=2)
optim = dict(base_lr=1e-3, scheduler=dict(warmup_iters=50))
data = dict(
    train=["ct_synth_train"],
    roots=dict(ct_synth=None),  # None: $CT_SYNTH_ROOT / datasets (generated there on first use)
    num_workers=2,
    train_mapper=dict(name="InContextTrainMapper", clip_len=4, size=[64, 64], support=_support, support_size=8,
                      slices="random", transforms=_window, augment=dict(in_task=dict(p=0.25), task=dict(p=0.25))),
    evaluate=[dict(name="ct_synth_test", tag="ct_synth_test_volume", per_video=True,
                   mapper=dict(name="InContextEvalMapper", size=[64, 64], support=_support, support_size=8,
                               transforms=_window),
                   evaluator=dict(name="VolumeSegEvaluator"))],
)
