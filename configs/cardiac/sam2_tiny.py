# SAM2 as a promptable tracker at CPU scale (the adapter's cpu_tiny SAM2, 1.35 M parameters, 128², random init: no
# SAM2 weights can be downloaded here; a local sam2.1 checkpoint goes in model.sam2.checkpoint). Trained on clips
# that join two annotated frames (annotated_pair sampler): prompted with the GT mask or box on one, SAM2's loss on
# the other. Evaluated on whole videos: every chamber prompted by its GT mask on the first annotated frame, tracked
# forwards and backwards, scored on the other annotated frames (Dice/IoU/HD95 and tracking metrics).
_base_ = ["../_base_/runtime.py", "../_base_/echo_synth_random.py"]
model = dict(
    name="SAM2",
    num_classes=4,
    sam2=dict(config="cpu_tiny", image_size=128, checkpoint=None),
    prompt="mask",              # "box": GT boxes (box_jitter_px: seeded noise)
    prompt_frame="first",       # "ed" / "middle" / k-th annotated frame
    train_prompt="mixed",       # GT mask or (4 px jittered) GT box per training clip, at random
    sam2_train="full",          # "frozen" / "lora" (+ lora=dict(target="samurai", r=8, alpha=8)) / "decoder"
)
# random init learns propagation late: tracking mDice 0.015 / 0.709 / 0.764 at 500 / 1000 / 1500 (sam2_tiny_site.py)
train = dict(max_iter=1500, eval_period=500, checkpoint_period=500, batch_size=4, find_unused_parameters=True)
optim = dict(base_lr=1e-3, scheduler=dict(warmup_iters=50))
_video = dict(per_video=True, mapper=dict(name="VideoEvalMapper", size=[128, 128], transforms=[dict(name="FanCrop")]),
              evaluator=[dict(name="VideoSegEvaluator", num_vis=3), dict(name="TrackingEvaluator")])
data = dict(
    train_mapper=dict(clip_len=8, frame_sampler=dict(name="annotated_pair")),
    evaluate=[dict(name="echo_synth_random_test", tag="echo_synth_random_test_video", **_video)],
)
