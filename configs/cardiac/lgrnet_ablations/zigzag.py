# Ablation (paper Tab. 5): zigzag (snake) scan order over the T×n_q query grid instead of the Hilbert curve.
_base_ = ["../lgrnet_tiny.py"]
model = dict(encoder=dict(scan=dict(scan_order="zigzag")))
