# +LGSD-slots: LGSD (lgrnet_tiny_lgsd.py) distilling every frame-query slot as its own token, iBOT-style, instead of
# one pooled vector per view: slot s of a teacher global view -> slot s of every other student view, one shared head,
# a centre per slot, features standardised per (slot, feature) over the batch. See models/metaarchs/lgsd.py.
_base_ = ["./lgrnet_tiny_lgsd.py"]
model = dict(lgsd=dict(tokens="slots"))
