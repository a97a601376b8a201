# SAM2 in-context segmentation (seed 001) on the embedded synthetic echo: support frames of other videos (with their
# GT masks) enter SAM2's memory as conditioning frames; the query video's annotated frames are tracked through
# them in frame order, one chamber at a time. The cpu_tiny SAM2 of configs/ct_synth/sam2_incontext_tiny.py (random
# init), trained with the single-class protocol: one chamber per sample, 4 of the video's annotated frames as
# queries, 4 support frames of one fixed training video (seed 001). Evaluated on every annotated frame of the test
# videos (queries="annotated"), 4 support frames per chamber drawn from all training videos (random_slices: the
# protocol of benchmarks/incontext_comparison.py).
_base_ = ["../_base_/runtime.py", "../_base_/echo_synth_random.py"]
_support = dict(name="random_slices", dataset="echo_synth_random_train", min_pixels=64)
# training support: seed 001's protocol, one fixed training video (random frames of it); trained with random_slices
# instead (data.train_mapper.support.name=random_slices), 600 iterations collapse to 0.02 mDice (README)
_train_support = dict(name="fixed_volume", dataset="echo_synth_random_train", min_pixels=64)
_crop = [dict(name="FanCrop")]
model = dict(
    name="SAM2InContext",
    num_classes=4,
    sam2=dict(config="cpu_tiny", image_size=128, checkpoint=None, overrides={"model.num_maskmem": 7}),
    memory_selector=None,
    sam2_train="full",
)
train = dict(max_iter=600, eval_period=300, checkpoint_period=300, batch_size=2, find_unused_parameters=True)
optim = dict(base_lr=1e-3, scheduler=dict(warmup_iters=50))
data = dict(
    eval_mapper=None,  # the evaluation below has its own mapper (and FLOPs are counted with it)
    train_mapper=dict(_delete_=True, name="InContextTrainMapper", clip_len=4, size=[128, 128],
                      support=_train_support, support_size=4, slices="random", transforms=_crop),
    evaluate=[dict(name="echo_synth_random_test", tag="echo_synth_random_test_frames", per_video=True,
                   mapper=dict(name="InContextEvalMapper", size=[128, 128], support=_support, support_size=4,
                               queries="annotated", transforms=_crop),
                   evaluator=dict(name="VideoSegEvaluator", num_vis=3))],
)
