# +HTS+LGSD (seed 000): Local-to-Global Self-Distillation (lgrnet_tiny_lgsd.py) with the supervised clips drawn by
# Hybrid Temporal Sampling (the same sampler settings as lgrnet_tiny_hts.py).
_base_ = ["./lgrnet_tiny_lgsd.py"]
data = dict(train_mapper=dict(frame_sampler=dict(name="hybrid", local_window=3, global_share=0.5)))
