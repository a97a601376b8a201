# The EchoNet-Dynamic U-Net evaluated on whole videos: one sample per video scored on its traced ES and ED frames,
# the model run in 16-frame windows, Dice/IoU and the ejection fraction by area-length against FileList's EF.
_base_ = ["./unet_tiny.py"]
data = dict(evaluate=[
    "echonet_dynamic_val",
    dict(name="echonet_dynamic_test", tag="echonet_dynamic_test_video", per_video=True,
         mapper=dict(name="VideoEvalMapper", size=[128, 128]), window=dict(size=16, overlap=4),
         evaluator=[dict(name="VideoSegEvaluator", num_vis=3), dict(name="EFEvaluator")]),
])
