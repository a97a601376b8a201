# Per-frame 2D U-Net baseline on CAMUS (3 classes: LV endocardium, LV myocardium, LA); CPU-sized.
_base_ = ["../cardiac/unet_tiny.py", "../_base_/camus.py"]  # same model and schedule, CAMUS data
model = dict(num_classes=3)
