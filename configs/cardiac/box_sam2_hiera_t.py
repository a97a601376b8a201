# BOX-SAM2 at paper scale, for a GPU: SAM2.1 Hiera-T (38.96 M parameters) at 512² with its released weights from a
# local file (nothing is downloaded: export SAM2_CHECKPOINT=/path/sam2.1_hiera_tiny.pt, or set
# model.sam2.checkpoint), LoRA on its memory-attention and mask-decoder projections, and a CAFormer-S18 box head.
# Built and parameter-counted in tests/models/test_box_sam2.py; not trained here.
import os

_base_ = ["./box_sam2_tiny.py"]
model = dict(
    box_head=dict(backbone="caformer_s18", dim=256, num_heads=8),
    sam2=dict(config="sam2.1_hiera_t", image_size=512, checkpoint=os.environ.get("SAM2_CHECKPOINT")),
    sam2_train="lora",
    lora=dict(target="attention", r=8, alpha=16.0),
    train_box_jitter_px=8.0,    # 4 px at 128² scaled to 512² would be 16; half that, for pretrained SAM2
)
data = dict(train_mapper=dict(size=[512, 512]), eval_mapper=dict(size=[512, 512]))
train = dict(max_iter=6000, eval_period=1000, checkpoint_period=1000, batch_size=8)
optim = dict(base_lr=1e-4, scheduler=dict(warmup_iters=250))
