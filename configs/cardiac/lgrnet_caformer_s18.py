# LGRNet at paper scale (GPU): CAFormer-S18 backbone (seed 000's Metaformer), d_model 64, 3 encoder layers with
# 20 frame queries, 3 scan layers (d_inner 128, d_state 16, dt rank 4), 10 video queries, 12544 matching points;
# clips of 7 frames at 336² (the cardiac repo's training size), 11-frame eval clips at 384².
_base_ = ["./lgrnet_tiny.py"]
model = dict(
    d_model=64,  # c = 64 in the released configs (REFERENCE.md 3.6)
    mask_stride=4,  # the paper's FPN to stride 4 (84×84 masks at 336²)
    backbone=dict(model="caformer_s18"),
    encoder=dict(num_layers=3, n_heads=8, ffn_dim=1024, num_queries=20,
                 scan=dict(num_layers=3, ffn_dim=2048, d_inner=128)),
    decoder=dict(n_heads=8, ffn_dim=2048),
    loss=dict(num_points=12544, matcher=dict(num_points=12544)),
)
data = dict(train_mapper=dict(size=[336, 336]), eval_mapper=dict(size=[384, 384]))
train = dict(max_iter=20000, eval_period=2000, checkpoint_period=2000, batch_size=8)
optim = dict(base_lr=1e-4, lr_multipliers={"backbone": 0.1}, scheduler=dict(warmup_iters=500))
