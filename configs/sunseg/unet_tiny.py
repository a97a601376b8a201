# Per-frame 2D U-Net baseline on SUN-SEG (one class, polyp) at 128², CPU-sized: cardiac/unet_tiny.py's model and
# schedule on the SUN-SEG data.
_base_ = ["../cardiac/unet_tiny.py", "../_base_/sunseg.py"]
model = dict(num_classes=1)
