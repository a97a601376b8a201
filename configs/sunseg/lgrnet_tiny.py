# LGRNet scaled down for CPU (the model of cardiac/lgrnet_tiny.py: mobilenetv3_small, d_model 64, 2 encoder
# layers, 10 frame queries) on SUN-SEG: one class (polyp), 7-frame train clips at 128².
_base_ = ["../cardiac/lgrnet_tiny.py", "../_base_/sunseg.py"]
model = dict(num_classes=1)
