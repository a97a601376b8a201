# LGRNet scaled down for CPU (see configs/cardiac/lgrnet_tiny.py) on CAMUS: 3 classes.
_base_ = ["../cardiac/lgrnet_tiny.py", "../_base_/camus.py"]  # same model and schedule, CAMUS data
model = dict(num_classes=3)
