# The per-slice baseline on the embedded synthetic CT: the 2D U-Net of configs/cardiac/unet_tiny.py on single
# axial slices (every slice of the training volumes, empty ones included), in the abdominal soft-tissue window;
# evaluated on whole test volumes with the in-context models' metrics (3D Dice / HD95 per class). No support set:
# the reference an in-context method must beat with its few labelled slices.
_base_ = ["../cardiac/unet_tiny.py"]
_window = [dict(name="IntensityWindow", low=-160, high=240)]  # W 400 / L 40 HU
data = dict(
    train=["ct_synth_train"],
    roots=dict(ct_synth=None),  # None: $CT_SYNTH_ROOT / datasets (generated there on first use)
    train_mapper=dict(name="ClipTrainMapper", clip_len=1, size=[128, 128], transforms=_window),
    # the FLOP count's clip (11 slices, as the in-context configs); evaluation uses the entry below
    eval_mapper=dict(name="ClipEvalMapper", clip_len=11, size=[128, 128], transforms=_window),
    evaluate=[dict(name="ct_synth_test", tag="ct_synth_test_volume", per_video=True, window=dict(size=16),
                   mapper=dict(name="VideoEvalMapper", size=[128, 128], score="annotated", transforms=_window),
                   evaluator=dict(name="VolumeSegEvaluator"))],
)
