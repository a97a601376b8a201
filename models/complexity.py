"""Parameter and FLOP counts (fvcore). fvcore counts one fused multiply-add as one FLOP, i.e. it reports MACs,
the convention of the LGRNet paper's GFLOPs column."""
from __future__ import annotations

import logging
import warnings

import torch
from torch import nn

logger = logging.getLogger(__name__)


class _PredictWrapper(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        b, t = video.shape[:2]
        batch = {"video": video, "has_ann": torch.ones(b, t, dtype=torch.bool, device=video.device)}
        return self.model.predict(batch)["probs"]


def count_params(model: nn.Module) -> dict[str, int]:
    return {"params": sum(p.numel() for p in model.parameters()),
            "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad)}


@torch.no_grad()
def count_flops(model: nn.Module, clip_len: int, size: tuple[int, int], device: torch.device) -> float | None:
    """GFLOPs (MACs) of ``predict`` on one clip of ``clip_len`` frames at ``size``; None if tracing fails."""
    with warnings.catch_warnings():  # fvcore.nn scripts a focal loss at import: a FutureWarning we can't act on
        warnings.simplefilter("ignore", FutureWarning)
        from fvcore.nn import FlopCountAnalysis

    was_training = model.training
    model.eval()
    try:
        video = torch.zeros(1, clip_len, 3, *size, device=device)
        fca = FlopCountAnalysis(_PredictWrapper(model), (video,))
        fca.unsupported_ops_warnings(False).uncalled_modules_warnings(False).tracer_warnings("none")
        return fca.total() / 1e9
    except Exception as e:  # tracing is best-effort; a model it cannot trace still trains
        logger.warning(f"FLOP count failed ({type(e).__name__}: {e}); reporting none")
        return None
    finally:
        model.train(was_training)
