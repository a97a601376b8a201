# +HTS (seed 000): LGRNet-tiny trained on Hybrid Temporal Sampling clips — the annotated frame, 3 neighbours within
# ±3 frames and 3 frames from the rest of the video, sorted. Evaluation clips stay the centred 11-frame windows.
_base_ = ["./lgrnet_tiny.py"]
data = dict(train_mapper=dict(frame_sampler=dict(name="hybrid", local_window=3, global_share=0.5)))
