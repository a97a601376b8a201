"""Dataset curation utilities (e.g. the ultrasound fan crop)."""
from .fan_crop import crop_to_bbox, fan_bbox, fan_crop_video, fan_mask, to_grey

__all__ = ["crop_to_bbox", "fan_bbox", "fan_crop_video", "fan_mask", "to_grey"]
