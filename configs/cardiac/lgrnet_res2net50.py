# LGRNet with the paper's Res2Net-50 backbone (paper Tab. 1: 13.2 GFLOPs, 26.6 M params at 352², T = 6; GPU).
_base_ = ["./lgrnet_caformer_s18.py"]
model = dict(backbone=dict(model="res2net50_26w_4s"))
