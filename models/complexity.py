"""Parameter and FLOP counts (fvcore). fvcore counts one fused multiply-add as one FLOP, i.e. it reports MACs,
the convention of the LGRNet paper's GFLOPs column. A model whose ``predict`` fvcore's JIT tracer cannot follow
(data-dependent control flow: BOX-SAM2's prompt frames and memory) is counted with torch's dispatcher-level
``FlopCounterMode`` instead, halved to MACs."""
from __future__ import annotations

import logging
import math
import warnings

import torch
from torch import nn

logger = logging.getLogger(__name__)


class _PredictWrapper(nn.Module):
    """``predict`` on a video alone; the empty masks and the support an in-context or prompted model needs are
    made up here (what is counted is the compute, not the answer)."""

    def __init__(self, model: nn.Module, support_size: int = 1):
        super().__init__()
        self.model, self.support_size = model, int(support_size)

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        b, t = video.shape[:2]
        batch = {"video": video, "has_ann": torch.ones(b, t, dtype=torch.bool, device=video.device)}
        k = getattr(self.model, "num_classes", None)
        if isinstance(k, int):  # empty ground truth, for models prompted with it (SAM2, SAMURAI: prompt on frame 0)
            batch["masks"] = torch.zeros(b, t, k, *video.shape[-2:], dtype=torch.bool, device=video.device)
        if "support" in getattr(self.model, "requires", ()) and isinstance(k, int):
            s = self.support_size * k  # support_size slices for each class, as InContextEvalMapper gives them
            batch["support"] = {"images": video.new_zeros(b, s, 3, *video.shape[-2:]),
                                "masks": torch.ones(b, s, k, *video.shape[-2:], dtype=torch.bool, device=video.device),
                                "classes": torch.arange(k, device=video.device).repeat_interleave(
                                    self.support_size).expand(b, s)}
        return self.model.predict(batch)["probs"]


def _shape(v) -> list[int]:
    return list(v.type().sizes())


def _attention_macs(q: list[int], k: list[int], v: list[int]) -> int:
    """Attention of shapes q (..., L, E), k (..., S, E), v (..., S, Ev): QK^T and AV, L·S·(E + Ev) MACs per
    batch·head."""
    return math.prod(q[:-2]) * q[-2] * k[-2] * (q[-1] + v[-1])


def _sdpa_flop(inputs, outputs) -> int:
    """scaled_dot_product_attention for fvcore, which has no handle for it (nn.MultiheadAttention's eval fast path
    lands here too)."""
    return _attention_macs(*(_shape(x) for x in inputs[:3]))


def _native_mha_flop(inputs, outputs) -> int:
    """nn.MultiheadAttention's fused eval fast path (self-attention, batch_first): q (B, L, E), k/v (B, S, E):
    q/k/v projections, QK^T and AV, output projection."""
    q, k = _shape(inputs[0]), _shape(inputs[1])
    b, lq, e = q
    s = k[1]
    return b * (lq * e * e + 2 * s * e * e + lq * s * 2 * e + lq * e * e)


def _deform_sampler_flop(inputs, outputs) -> int:
    """Our deformable-attention CPU sampler: canvas (C, Dh), loc (N, Lq, M, L, P, 2): 4 bilinear corners × Dh
    channels per sampling point, weighted (the same count serves the Triton op)."""
    dh = _shape(inputs[0])[-1]
    return math.prod(_shape(inputs[1])[:-1]) * 4 * dh


def _grid_sample_flop(inputs, outputs) -> int:
    """grid_sample, bilinear: 4 corner MACs per output element."""
    return 4 * math.prod(_shape(outputs[0]))


_EXTRA_HANDLES = {"aten::scaled_dot_product_attention": _sdpa_flop,
                  "aten::_native_multi_head_attention": _native_mha_flop,
                  "aten::grid_sampler": _grid_sample_flop,
                  "prim::PythonOp._CPUSampler": _deform_sampler_flop}


def _cpu_flash_flop(query, key, value, *args, out_shape=None, **kwargs) -> int:
    """torch's counter has formulas for the CUDA attention kernels but none for the CPU one that
    scaled_dot_product_attention dispatches to here, which it would count as 0: QK^T and AV, 2 FLOPs per MAC (the
    counter's unit; halved below), from the shapes it passes."""
    return 2 * _attention_macs(query, key, value)


_DISPATCH_HANDLES = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_flash_flop}


def count_params(model: nn.Module) -> dict[str, int]:
    """``params``: the network that predicts (``MetaArch.inference_model()``, e.g. LGSD's student; a plain module
    counts itself); ``trainable_params`` and ``training_params``: what training updates / holds."""
    from models.base import MetaArch

    net = model.inference_model() if isinstance(model, MetaArch) else model
    trainable = (model.trainable_parameters() if isinstance(model, MetaArch) else
                 ((n, p) for n, p in model.named_parameters() if p.requires_grad))
    return {"params": sum(p.numel() for p in net.parameters()),
            "trainable_params": sum(p.numel() for _, p in trainable),
            "training_params": sum(p.numel() for p in model.parameters())}


@torch.no_grad()
def count_flops(model: nn.Module, clip_len: int, size: tuple[int, int], device: torch.device,
                support_size: int = 1) -> float | None:
    """GFLOPs (MACs) of ``predict`` on one clip of ``clip_len`` frames at ``size`` (an in-context model: with
    ``support_size`` support slices per class); None if tracing fails."""
    with warnings.catch_warnings():  # fvcore.nn scripts a focal loss at import: a FutureWarning we can't act on
        warnings.simplefilter("ignore", FutureWarning)
        from fvcore.nn import FlopCountAnalysis

    was_training = model.training
    model.eval()
    try:
        video = torch.zeros(1, clip_len, 3, *size, device=device)
        if not getattr(model, "fvcore_traceable", True):  # known to defeat the tracer: skip the slow attempt
            return _dispatch_gmacs(model, video, support_size)
        fca = FlopCountAnalysis(_PredictWrapper(model, support_size), (video,))
        fca.set_op_handle(**_EXTRA_HANDLES)
        fca.unsupported_ops_warnings(False).uncalled_modules_warnings(False).tracer_warnings("none")
        return fca.total() / 1e9
    except Exception as e:  # fvcore traces with torch.jit: data-dependent Python control flow defeats it
        logger.info(f"fvcore cannot trace {type(model).__name__}.predict ({type(e).__name__}); counting with "
                    f"torch's FlopCounterMode instead")
        return _dispatch_gmacs(model, video, support_size)
    finally:
        model.train(was_training)


def _dispatch_gmacs(model: nn.Module, video: torch.Tensor, support_size: int = 1) -> float | None:
    """GMACs of one ``predict`` counted at the dispatcher (``torch.utils.flop_counter``: matmuls, convolutions,
    attention), which follows whatever Python path the call takes. It counts 2 FLOPs per multiply-add; halved here
    to the MACs of the fvcore column. Element-wise ops are not counted by either."""
    from torch.utils.flop_counter import FlopCounterMode

    # its module tracker hooks every module input that requires grad; a parameter passed as a module's input
    # (SAM2 does) has no grad_fn and trips it, so parameters are frozen for the count and restored after
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        for p, _ in flags:
            p.requires_grad_(False)
        with FlopCounterMode(display=False, custom_mapping=_DISPATCH_HANDLES) as counter:
            _PredictWrapper(model, support_size)(video)
        return counter.get_total_flops() / 2 / 1e9
    except Exception as e:  # a count is best-effort; a model that cannot be counted still trains
        logger.warning(f"FLOP count failed ({type(e).__name__}: {e}); reporting none")
        return None
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
