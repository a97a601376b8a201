# UniverSeg (seed 004) on the embedded synthetic echo (EchoSynth, CardiacUDC layout, random video split): the four
# chambers as four binary tasks, 64² fan-cropped frames, 32 features per level. Episodic training: per sample one
# chamber, 4 of the video's annotated frames as queries and 8 annotated frames of other training videos as the
# support (random_slices), with in-task and task augmentation (data_schedule/mappers/episode_augment.py).
# Evaluated on every annotated frame of the test videos (queries="annotated"), 8 support frames per chamber.
_base_ = ["../_base_/runtime.py", "../_base_/echo_synth_random.py"]
_support = dict(name="random_slices", dataset="echo_synth_random_train", min_pixels=64)
_crop = [dict(name="FanCrop")]
model = dict(name="UniverSeg", num_classes=4, encoder=[32, 32, 32, 32], decoder=[32, 32, 32], dice_weight=1.0,
             checkpoint=None, train_mode="full")  # adaptation: checkpoint=<a UniverSeg run>, train_mode="lora"
train = dict(max_iter=600, eval_period=300, checkpoint_period=300, batch_size=2)
optim = dict(base_lr=1e-3, scheduler=dict(warmup_iters=50))
data = dict(
    eval_mapper=None,  # the evaluation below has its own mapper (and FLOPs are counted with it)
    train_mapper=dict(_delete_=True, name="InContextTrainMapper", clip_len=4, size=[64, 64], support=_support,
                      support_size=8, slices="random", transforms=_crop,
                      augment=dict(in_task=dict(p=0.25), task=dict(p=0.25))),
    evaluate=[dict(name="echo_synth_random_test", tag="echo_synth_random_test_frames", per_video=True,
                   mapper=dict(name="InContextEvalMapper", size=[64, 64], support=_support, support_size=8,
                               queries="annotated", transforms=_crop),
                   evaluator=dict(name="VideoSegEvaluator", num_vis=3))],
)
