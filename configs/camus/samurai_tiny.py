# SAMURAI on CAMUS 4CH half sequences (ED <-> ES, every frame labelled): the cpu_tiny SAM2 trained on 4CH clips
# (a GT-mask prompt on one frame, SAM2's loss on the others), evaluated on whole half sequences prompted by the GT
# masks of the ED frame and scored on every other frame (LV endocardium, myocardium, LA). `model.name=SAM2` gives
# the SAM2 row with the same weights; a SAM2 checkpoint evaluates here unchanged.
_base_ = ["../cardiac/samurai_tiny.py", "../_base_/camus.py"]
model = dict(num_classes=3, prompt_frame="ed")
_video = dict(per_video=True, mapper=dict(name="VideoEvalMapper", size=[128, 128], transforms=[], score="annotated"),
              evaluator=[dict(name="VideoSegEvaluator", num_vis=3), dict(name="TrackingEvaluator")])
data = dict(train=["camus_4ch_train"],
            train_mapper=dict(clip_len=8, frame_sampler=dict(name="centered"), transforms=[]),
            evaluate=[dict(name="camus_4ch_val", tag="camus_4ch_val_video", **_video),
                      dict(name="camus_4ch_test", tag="camus_4ch_test_video", **_video)])
