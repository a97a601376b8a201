# LGRNet with the paper's PVTv2-B2 backbone (GPU).
_base_ = ["./lgrnet_caformer_s18.py"]
model = dict(backbone=dict(model="pvt_v2_b2"))
