# Few-shot site adaptation with seed 003's LoRA recipe. Start: the SAM2 trained on the cross-site split, exported
# by tools/export_sam2.py ($SAM2_SITE_CHECKPOINT, default output/sam2_tiny_site/sam2.pth). LoRA r 8 / alpha 8 /
# dropout 0 on layers 0-1 of the mask decoder's two-way transformer and of memory attention (preset "samurai"),
# everything else frozen, adapters-only checkpoints. Trained on the first n labelled videos of the held-out site
# (data.train: echo_synth_site_adapt{1,2,4}_train), evaluated with SAMURAI on the site's other half.
# benchmarks/samurai_adaptation.py runs the whole table (no adaptation / LoRA / full fine-tuning, n = 1, 2, 4).
import os

_base_ = ["./samurai_tiny.py"]
model = dict(sam2=dict(checkpoint=os.environ.get("SAM2_SITE_CHECKPOINT", "output/sam2_tiny_site/sam2.pth")),
             sam2_train="lora", lora=dict(target="samurai", r=8, alpha=8.0, dropout=0.0))
train = dict(max_iter=150, eval_period=0, checkpoint_period=150, checkpoint=dict(state="trainable"))
optim = dict(base_lr=5e-4, scheduler=dict(warmup_iters=10))
_video = dict(per_video=True, mapper=dict(name="VideoEvalMapper", size=[128, 128], transforms=[dict(name="FanCrop")]),
              evaluator=[dict(name="VideoSegEvaluator", num_vis=3), dict(name="TrackingEvaluator")])
data = dict(train=["echo_synth_site_adapt2_train"],
            evaluate=[dict(name="echo_synth_site_adapt2_test", tag="echo_synth_site_heldout_video", **_video)])
