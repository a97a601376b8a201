# Few-shot site adaptation with seed 003's LoRA recipe: the SAM2 trained on the cross-site split (init from its
# checkpoint: SAM2_SITE_CKPT, the model state of sam2_tiny_site.py's run), LoRA r 8 / alpha 8 / dropout 0 on layers
# 0-1 of the mask decoder's two-way transformer and of memory attention, encoders frozen, trained on the first n
# labelled videos of the held-out site (data.train: echo_synth_site_adapt{1,2,4}_train), adapters-only checkpoints;
# evaluated with SAMURAI on the site's held-out half. benchmarks/samurai_adaptation.py runs the whole table.
_base_ = ["./samurai_tiny.py"]
model = dict(sam2=dict(checkpoint="${oc.env:SAM2_SITE_CKPT,output/sam2_tiny_site/sam2_state.pth}"),
             sam2_train="lora", lora=dict(target="samurai", r=8, alpha=8.0, dropout=0.0))
train = dict(max_iter=150, eval_period=0, checkpoint_period=150, checkpoint=dict(state="trainable"))
optim = dict(base_lr=5e-4, scheduler=dict(warmup_iters=10))
_video = dict(per_video=True, mapper=dict(name="VideoEvalMapper", size=[128, 128], transforms=[dict(name="FanCrop")]),
              evaluator=[dict(name="VideoSegEvaluator", num_vis=3), dict(name="TrackingEvaluator")])
data = dict(train=["echo_synth_site_adapt2_train"],
            evaluate=[dict(name="echo_synth_site_adapt2_test", tag="echo_synth_site_heldout_video", **_video)])
