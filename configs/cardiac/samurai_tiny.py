# SAMURAI (seed 003): the SAM2 tracker of sam2_tiny.py plus a Kalman motion model that re-scores SAM2's three
# candidate masks (alpha 0.15, 15 stable frames, IoU 0.3) and motion-aware memory selection (predicted IoU > 0.5,
# object score > 0, motion score > 0, 15 frames looked back, previous frame kept). Same parameters: a checkpoint of
# sam2_tiny.py evaluates here unchanged (--trainer_mode eval --eval_path ...), and training is SAM2's.
_base_ = ["./sam2_tiny.py"]
model = dict(
    name="SAMURAI",
    motion=dict(kf_score_weight=0.15, stable_frames=15, stable_iou=0.3),
    memory_selector=dict(name="samurai", iou_threshold=0.5, obj_score_threshold=0.0, kf_score_threshold=0.0,
                         max_look_back=15),
)
