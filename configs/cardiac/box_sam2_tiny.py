# BOX-SAM2 (seed 000: box prediction + box-promptable SAM2) at CPU scale: a mobilenetv3_small box head (one query
# per chamber, temporal mixing) and SAM2 at the adapter's cpu_tiny size (1.35 M parameters, 128²), random init
# (no SAM2 weights can be downloaded here; a local sam2.1 checkpoint goes in model.sam2.checkpoint). Joint training:
# box losses + SAM2's loss on jittered ground-truth boxes of the annotated frames. Evaluation prompts every frame
# with the predicted boxes; `model.boxes=gt` gives the GT-box upper bound, `model.box_jitter_px=N` the noise curve.
_base_ = ["../_base_/runtime.py", "../_base_/echo_synth_random.py"]
model = dict(
    name="BoxSAM2",
    num_classes=4,
    box_head=dict(backbone="mobilenetv3_small_100", dim=96, num_heads=4, temporal_kernel=3, norm="group"),
    sam2=dict(config="cpu_tiny", image_size=128, checkpoint=None),
    boxes="predicted",          # "gt": boxes of the ground-truth masks (annotated frames only)
    box_jitter_px=0.0,          # evaluation box noise, px per coordinate
    prompt_frames="all",        # "reference" / "every" (+ prompt_every): prompt some frames, propagate the rest
    stage="joint",              # "box_head" / "sam2": the two-stage recipe (init_from: stage 1's checkpoint)
    sam2_train="full",          # "frozen" / "lora"
    train_box_jitter_px=4.0,
)
train = dict(max_iter=1500, eval_period=500, checkpoint_period=500, batch_size=4, find_unused_parameters=True)
optim = dict(base_lr=1e-3, scheduler=dict(warmup_iters=50))
