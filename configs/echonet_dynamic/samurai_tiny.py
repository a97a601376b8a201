# SAMURAI on EchoNet-Dynamic: the cpu_tiny SAM2 trained on clips joining the two traced frames of a video (ED and
# ES, annotated_pair sampler: a GT-mask prompt on one, SAM2's loss on the other), evaluated on whole videos
# prompted by the ED tracing and scored on the ES frame (LV only). `model.name=SAM2` gives the SAM2 row with the
# same weights.
_base_ = ["../cardiac/samurai_tiny.py", "../_base_/echonet_dynamic.py"]
model = dict(num_classes=1, prompt_frame="ed")
_video = dict(per_video=True, mapper=dict(name="VideoEvalMapper", size=[112, 112], transforms=[]),
              evaluator=[dict(name="VideoSegEvaluator", num_vis=3), dict(name="TrackingEvaluator")])
data = dict(train_mapper=dict(clip_len=8, size=[112, 112], frame_sampler=dict(name="annotated_pair"), transforms=[]),
            evaluate=[dict(name="echonet_dynamic_val", tag="echonet_dynamic_val_video", **_video),
                      dict(name="echonet_dynamic_test", tag="echonet_dynamic_test_video", **_video)])
