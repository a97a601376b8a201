# LGRNet scaled down for CPU on EchoNet-Dynamic: the CardiacUDC LGRNet (same runtime) with one class, LV.
_base_ = ["../cardiac/lgrnet_tiny.py", "../_base_/echonet_dynamic.py"]
model = dict(num_classes=1)
