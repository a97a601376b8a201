# LGRNet with the PVTv2-B2 backbone, the paper's SUN-SEG setup (GPU; REFERENCE §3.6): the paper-scale model of
# cardiac/lgrnet_pvt_v2_b2.py (c = 64, 3 encoder layers, 20 frame queries, 3 scan layers, 10 video queries, 12544
# points) with one class, clips of T = 6 frames at 352² for training and evaluation. Training clips follow
# LGRNet's local-global sampling: the reference frame, 2 neighbours within ±3 frames and 3 frames from the rest
# of the video, sorted (global_share 0.6 of the 5 other frames = 3). Not reproduced: the paper's per-iteration
# rescaling of training inputs to 256..448 and whole-video evaluation (here: 6-frame clips scored on frame 4).
_base_ = ["../cardiac/lgrnet_pvt_v2_b2.py", "../_base_/sunseg.py"]
model = dict(num_classes=1)
data = dict(
    train_mapper=dict(clip_len=6, size=[352, 352], frame_sampler=dict(name="hybrid", local_window=3,
                                                                      global_share=0.6)),
    eval_mapper=dict(clip_len=6, size=[352, 352]),
)
