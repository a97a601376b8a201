# Ablation (paper Tab. 4): LGRNet without Cyclic Neighbourhood Propagation.
_base_ = ["../lgrnet_tiny.py"]
model = dict(encoder=dict(use_cnp=False))
