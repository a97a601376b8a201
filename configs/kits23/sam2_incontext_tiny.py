# SAM2 in-context segmentation on KiTS23 ($DATASET_PATH/KiTS23 or data.roots.kits23) with seed 001's label mapping:
# one class kidney + tumour, cysts as background (kits23_*; the challenge's overlapping regions are
# kits23_regions_* with num_classes=3). Renal window W 400 / L 100.
_base_ = ["../ct_synth/sam2_incontext_tiny.py"]
_support = dict(name="fixed_volume", dataset="kits23_train")
_window = [dict(name="IntensityWindow", low=-100, high=300)]
model = dict(num_classes=1)
data = dict(
    train=["kits23_train"],
    roots=dict(kits23=None),  # None: $DATASET_PATH (the folder holding KiTS23/)
    train_mapper=dict(support=_support, transforms=_window),
    evaluate=[dict(name="kits23_test", tag="kits23_test_volume", per_video=True,
                   mapper=dict(name="InContextEvalMapper", size=[128, 128], support=_support, support_size=4,
                               transforms=_window),
                   evaluator=dict(name="VolumeSegEvaluator"))],
)
