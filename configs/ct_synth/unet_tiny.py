# The per-slice baseline on the embedded synthetic CT: the 2D U-Net of configs/cardiac/unet_tiny.py on single
# axial slices (every slice of the training volumes, empty ones included), in the abdominal soft-tissue window;
# evaluated on whole test volumes with the in-context models' metrics (3D Dice / HD95 per class). No support set:
# the reference an in-context method must beat with its few labelled slices.
_base_ = ["../_base_/runtime.py"]
_window = [dict(name="IntensityWindow", low=-160, high=240)]  # W 400 / L 40 HU
model = dict(
    name="UNetBaseline",
    num_classes=4,
    encoder="tu-mobilenetv3_small_100",
    encoder_depth=5,
    decoder_channels=[128, 64, 32, 16, 16],
    norm="batch",
    loss=dict(ce_weight=1.0, dice_weight=1.0),
    pretrained_path=None,
)
train = dict(max_iter=1200, eval_period=400, checkpoint_period=400)
data = dict(
    train=["ct_synth_train"],
    roots=dict(ct_synth=None),  # None: $CT_SYNTH_ROOT / datasets (generated there on first use)
    train_mapper=dict(name="ClipTrainMapper", clip_len=1, size=[128, 128], transforms=_window),
    eval_mapper=dict(name="ClipEvalMapper", clip_len=1, size=[128, 128], transforms=_window),
    evaluate=[dict(name="ct_synth_test", tag="ct_synth_test_volume", per_video=True, window=dict(size=16),
                   mapper=dict(name="VideoEvalMapper", size=[128, 128], score="annotated", transforms=_window),
                   evaluator=dict(name="VolumeSegEvaluator"))],
)
