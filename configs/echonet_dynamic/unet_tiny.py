# Per-frame 2D U-Net baseline on EchoNet-Dynamic: the CardiacUDC U-Net (same runtime) with one class, LV.
_base_ = ["../cardiac/unet_tiny.py", "../_base_/echonet_dynamic.py"]
model = dict(num_classes=1)
