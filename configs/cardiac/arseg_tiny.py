# AR-SEG (seed 000's decoder-only autoregressive segmentation) at the size of the U-Net and LGRNet-tiny (1.7 M
# parameters): a 16×16 class grid decoded token by token after the frame's 8×8 patch prefix, a small refiner to
# 128². Trains on the annotated frames like the U-Net. Ablations: arseg_tiny_parallel.py (no causal order),
# arseg_tiny_video.py (previous frame as a second prefix), decode=consensus at evaluation.
_base_ = ["../_base_/runtime.py", "../_base_/echo_synth_random.py"]
model = dict(
    name="ARSeg",
    num_classes=4,
    tokenizer=dict(name="grid", grid=16, resample="nearest"),
    dim=160,
    depth=6,
    heads=5,
    mlp_ratio=3.0,
    stem=[32, 64, 96],
    order="causal",
    prefix_frames=1,
    cell_features=True,                 # cell i's stride-8 stem feature added to the position predicting it
    refiner=dict(channels=32),
    token_weight=1.0,
    refiner_noise=0.1,
    loss=dict(ce_weight=1.0, dice_weight=1.0),
    decode=dict(mode="greedy", samples=8, temperature=1.0, seed=0, chunk=128, refine=True),
)
train = dict(max_iter=600, eval_period=300, checkpoint_period=300)
