# AR-SEG's video variant: the previous frame of the clip (clamped at the first) as a second image prefix.
_base_ = ["arseg_tiny.py"]
model = dict(prefix_frames=2)
