# Data: the embedded synthetic echo dataset (CardiacUDC layout), seeded random 80/20 video split.
data = dict(
    train=["echo_synth_random_train"],
    evaluate=["echo_synth_random_test"],
    roots=dict(cardiac_udc=None, echo_synth=None),  # None: $DATASET_PATH / datasets/echo_synth
    num_workers=2,
    eval_batch_size=4,
    # the seed project's preprocessing: every frame cropped to the ultrasound fan's box (found on the first frame)
    train_mapper=dict(name="ClipTrainMapper", clip_len=7, size=[128, 128], frame_sampler=dict(name="centered"),
                      transforms=[dict(name="FanCrop")]),
    eval_mapper=dict(name="ClipEvalMapper", clip_len=11, size=[128, 128], frame_sampler=dict(name="centered"),
                     transforms=[dict(name="FanCrop")]),
    evaluator=dict(name="VideoSegEvaluator", num_vis=3),
    bad_sample_policy="error",  # a corrupt training video/sample: "error" stops naming it, "skip" leaves it out

)
