# Ablation: training query clips of consecutive slices overlapping the class (its ends and the slices beyond,
# where it is absent, included) instead of seed 001's random slices that all show it.
_base_ = ["sam2_incontext_tiny.py"]
data = dict(train_mapper=dict(slices="contiguous"))
