# SAM2 in-context segmentation on BTCV (13 organs; $DATASET_PATH/BTCV or data.roots.btcv): the ct_synth recipe
# with BTCV's classes, its seeded case split and a support volume from btcv_train.
_base_ = ["../ct_synth/sam2_incontext_tiny.py"]
_support = dict(name="fixed_volume", dataset="btcv_train")
_window = [dict(name="IntensityWindow", low=-160, high=240)]  # W 400 / L 40 HU
model = dict(num_classes=13)
data = dict(
    train=["btcv_train"],
    roots=dict(btcv=None),  # None: $DATASET_PATH (the folder holding BTCV/)
    train_mapper=dict(support=_support),
    evaluate=[dict(name="btcv_test", tag="btcv_test_volume", per_video=True,
                   mapper=dict(name="InContextEvalMapper", size=[128, 128], support=_support, support_size=4,
                               transforms=_window),
                   evaluator=dict(name="VolumeSegEvaluator"))],
)
