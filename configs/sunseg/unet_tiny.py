# Per-frame 2D U-Net baseline on SUN-SEG (one class, polyp) at 128², CPU-sized; the model of cardiac/unet_tiny.py.
_base_ = ["../_base_/runtime.py", "../_base_/sunseg.py"]
model = dict(
    name="UNetBaseline",
    num_classes=1,
    encoder="tu-mobilenetv3_small_100",
    encoder_depth=5,
    decoder_channels=[128, 64, 32, 16, 16],
    norm="batch",
    loss=dict(ce_weight=1.0, dice_weight=1.0),
    pretrained_path=None,
)
train = dict(max_iter=1200, eval_period=400, checkpoint_period=400)
