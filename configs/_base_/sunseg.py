# Data: SUN-SEG under $DATASET_PATH/SUN-SEG (or data.roots.sunseg): train on TrainDataset (one sample per frame),
# evaluate on the four test sets (one sample per frame, 11-frame clips scored on their centre frame). RGB frames,
# one class ("polyp").
data = dict(
    train=["sunseg_train"],
    evaluate=["sunseg_easy_seen_test", "sunseg_easy_unseen_test", "sunseg_hard_seen_test", "sunseg_hard_unseen_test"],
    roots=dict(_delete_=True, sunseg=None),  # only this family (None: $DATASET_PATH)
    num_workers=2,
    eval_batch_size=4,
    train_mapper=dict(name="ClipTrainMapper", clip_len=7, size=[128, 128], frame_sampler=dict(name="centered"),
                      transforms=[]),  # whole frames (the CardiacUDC configs they may inherit crop to the fan)
    eval_mapper=dict(name="ClipEvalMapper", clip_len=11, size=[128, 128], frame_sampler=dict(name="centered"),
                     transforms=[]),
    evaluator=dict(name="VideoSegEvaluator", num_vis=3),
    bad_sample_policy="error",  # a case without its GT masks: "error" stops naming it, "skip" leaves it out
)
