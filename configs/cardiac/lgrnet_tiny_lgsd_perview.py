# +LGSD-perview: LGSD (lgrnet_tiny_lgsd.py) whose projection heads standardise the global views and the local views
# each by their own batch statistics, the eval-mode teacher included, instead of one set of statistics over all the
# student's views and running statistics in the teacher. See LGSD.distillation_loss in models/metaarchs/lgsd.py.
_base_ = ["./lgrnet_tiny_lgsd.py"]
model = dict(lgsd=dict(head_norm_stats="per_view"))
