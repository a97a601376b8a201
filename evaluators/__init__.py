"""Evaluators (registered in ``core.registry.EVALUATORS`` on import) and pure metric functions."""
from evaluators import metrics  # noqa: F401
from evaluators.metrics import dice_iou, hd95, probs_to_labels, seg_stats  # noqa: F401
from evaluators.video_seg import VideoSegEvaluator  # noqa: F401
from evaluators.clinical import EFEvaluator  # noqa: F401
from evaluators.tracking import TrackingEvaluator  # noqa: F401
from evaluators.volume_seg import VolumeSegEvaluator  # noqa: F401
