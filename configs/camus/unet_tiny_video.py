# The CAMUS U-Net evaluated on whole videos: one sample per half sequence scored on its ED and ES frames, the model
# run in 16-frame windows, Dice/IoU/HD95 and the ejection fraction by area-length against Info_*.cfg's EF.
_base_ = ["./unet_tiny.py"]
data = dict(evaluate=[
    "camus_val",
    dict(name="camus_test", tag="camus_test_video", per_video=True, mapper=dict(name="VideoEvalMapper", size=[128, 128]),
         window=dict(size=16, overlap=4),
         evaluator=[dict(name="VideoSegEvaluator", num_vis=3), dict(name="EFEvaluator")]),
])
