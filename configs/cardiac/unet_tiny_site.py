# Ablation: the U-Net baseline on the cross-site split (train G_100 + R_126, evaluate on val and test sites).
_base_ = ["./unet_tiny.py"]
data = dict(train=["echo_synth_site_train"], evaluate=["echo_synth_site_val", "echo_synth_site_test"])
