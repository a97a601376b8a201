# UniverSeg on CTSynth trained on windows of consecutive query slices overlapping the organ's extent (its ends and
# the slices beyond them, where it is absent), instead of random slices that all show it: the model sees absent
# organs in training. Everything else as configs/ct_synth/universeg_tiny.py.
_base_ = ["universeg_tiny.py"]
data = dict(train_mapper=dict(slices="contiguous"))
