# Ablation (paper Tab. 4): LGRNet without the Hilbert selective scan (and its condense/distribute attention).
_base_ = ["../lgrnet_tiny.py"]
model = dict(encoder=dict(use_scan=False))
