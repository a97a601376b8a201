"""Constant-velocity Kalman filter on boxes: the motion model SAMURAI adds to SAM2 (our own numpy implementation).

Source: SAMURAI (Yang et al., "SAMURAI: Adapting Segment Anything Model for Zero-Shot Visual Tracking with
Motion-Aware Memory", arXiv 2411.11922; repository yangchris11/samurai, ``sam2/sam2/utils/kalman_filter.py``). That
filter is the one of DeepSORT / ByteTrack; SAMURAI uses its predicted box to score SAM2's candidate masks by the IoU of
each mask's box with the prediction (``box_iou`` here).

Model
    State ``(x, y, a, h, vx, vy, va, vh)``: box centre, aspect ratio ``a = w / h``, height, and their velocities
    (per frame). Measurement ``(x, y, a, h)`` (``xyxy_to_xyah``). Transition ``F`` adds one frame of velocity to the
    position (dt = 1); measurement matrix ``H = [I4 0]``.

Noise (all diagonal, given as standard deviations; ``h`` is the current height ``mean[3]``)
    The stds of x, y and h scale with the box height, so the filter behaves the same at every image scale; the
    aspect ratio has fixed stds. With ``sp = std_weight_position`` (default 1/20) and ``sv = std_weight_velocity``
    (default 1/160):

    ============  ==============================================================
    initiate      ``[2sp h, 2sp h, 1e-2, 2sp h, 10sv h, 10sv h, 1e-5, 10sv h]``
    predict (Q)   ``[sp h, sp h, 1e-2, sp h, sv h, sv h, 1e-5, sv h]`` (h before the prediction)
    project (R)   ``[sp h, sp h, 1e-1, sp h]`` (h of the predicted mean)
    ============  ==============================================================

    ``update`` is the standard Kalman update through ``project``'s distribution; the gain is a Cholesky solve with
    the innovation covariance, and the posterior covariance is ``P - K S K^T``.

Everything is float64 numpy; inputs may be lists, numpy arrays or torch tensors (of any float dtype). No function
changes its inputs. Time runs either way: feeding the frames in reverse order tracks with negated velocities.

``BoxTrack`` is the per-object state a tracker keeps per video (``initiate`` on the first box, then ``predict`` /
``update`` per frame, ``predicted_box`` for the box to compare masks with).
"""
from __future__ import annotations

import numpy as np
from scipy.linalg import cho_factor, cho_solve

NDIM = 4  # measured quantities (x, y, a, h); the state adds their velocities


def _f64(x) -> np.ndarray:
    """float64 numpy copy-or-view of a list, numpy array or torch tensor (torch is not imported here)."""
    if hasattr(x, "detach"):  # torch.Tensor
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def _boxes(x, name: str) -> np.ndarray:
    b = _f64(x)
    if b.ndim == 0 or b.shape[-1] != 4:
        raise ValueError(f"{name}: expected shape (4,) or (N, 4), got {b.shape}")
    return b


def xyxy_to_xyah(box) -> np.ndarray:
    """``(x0, y0, x1, y1)`` -> ``(cx, cy, w / h, h)``, for one box ``(4,)`` or ``(..., 4)`` arrays.

    A box with ``h == 0`` gets aspect ``0`` (not inf/NaN): its width is lost, ``xyah_to_xyxy`` gives it back with
    ``w = 0``. Other boxes keep ``a = w / h`` as it is (an inverted box with ``h < 0`` has a negative height).
    """
    b = _boxes(box, "xyxy_to_xyah")
    w = b[..., 2] - b[..., 0]
    h = b[..., 3] - b[..., 1]
    a = np.divide(w, h, out=np.zeros_like(w), where=h != 0)
    return np.stack([b[..., 0] + w / 2, b[..., 1] + h / 2, a, h], axis=-1)


def xyah_to_xyxy(xyah) -> np.ndarray:
    """``(cx, cy, a, h)`` -> ``(x0, y0, x1, y1)`` with ``w = a h``, for ``(4,)`` or ``(..., 4)`` arrays (a state
    vector's first four entries work too: pass ``mean[:4]``)."""
    m = _boxes(xyah, "xyah_to_xyxy")
    h = m[..., 3]
    w = m[..., 2] * h
    return np.stack([m[..., 0] - w / 2, m[..., 1] - h / 2, m[..., 0] + w / 2, m[..., 1] + h / 2], axis=-1)


def box_iou(box, boxes) -> np.ndarray:
    """IoU ``(N,)`` of one xyxy box ``(4,)`` with each of ``boxes`` ``(N, 4)`` (or one box ``(4,)``: ``(1,)``).

    Inverted sides count as zero extent; a pair whose union is 0 (two empty boxes) has IoU 0.
    """
    b = _boxes(box, "box_iou box")
    if b.shape != (4,):
        raise ValueError(f"box_iou: box must have shape (4,), got {b.shape}")
    bs = _boxes(boxes, "box_iou boxes").reshape(-1, 4)
    iw = np.clip(np.minimum(b[2], bs[:, 2]) - np.maximum(b[0], bs[:, 0]), 0, None)
    ih = np.clip(np.minimum(b[3], bs[:, 3]) - np.maximum(b[1], bs[:, 1]), 0, None)
    inter = iw * ih
    area = max(b[2] - b[0], 0.0) * max(b[3] - b[1], 0.0)
    areas = np.clip(bs[:, 2] - bs[:, 0], 0, None) * np.clip(bs[:, 3] - bs[:, 1], 0, None)
    union = area + areas - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


class BoxKalmanFilter:
    """The filter's matrices and noise model; stateless (a track's ``(mean, cov)`` is passed in and returned), so one
    instance can serve every track."""

    def __init__(self, std_weight_position: float = 1.0 / 20, std_weight_velocity: float = 1.0 / 160):
        self.std_weight_position = float(std_weight_position)
        self.std_weight_velocity = float(std_weight_velocity)
        self.motion_mat = np.eye(2 * NDIM)  # F: position += 1 frame of velocity
        self.motion_mat[:NDIM, NDIM:] = np.eye(NDIM)
        self.update_mat = np.eye(NDIM, 2 * NDIM)  # H = [I4 0]

    # noise stds (see the module docstring)
    def initiate_std(self, h: float) -> np.ndarray:
        sp, sv = self.std_weight_position, self.std_weight_velocity
        return np.array([2 * sp * h, 2 * sp * h, 1e-2, 2 * sp * h, 10 * sv * h, 10 * sv * h, 1e-5, 10 * sv * h])

    def process_std(self, h: float) -> np.ndarray:
        sp, sv = self.std_weight_position, self.std_weight_velocity
        return np.array([sp * h, sp * h, 1e-2, sp * h, sv * h, sv * h, 1e-5, sv * h])

    def measurement_std(self, h: float) -> np.ndarray:
        sp = self.std_weight_position
        return np.array([sp * h, sp * h, 1e-1, sp * h])

    def initiate(self, measurement) -> tuple[np.ndarray, np.ndarray]:
        """A new track at ``measurement`` (xyah, ``(4,)``): mean ``(8,)`` with zero velocity, covariance ``(8, 8)``."""
        z = _state(measurement, NDIM, "measurement")
        mean = np.concatenate([z, np.zeros(NDIM)])
        return mean, np.diag(self.initiate_std(z[3]) ** 2)

    def predict(self, mean, cov) -> tuple[np.ndarray, np.ndarray]:
        """One frame ahead: ``F mean``, ``F cov F^T + Q`` (Q from the height before the step)."""
        mean, cov = _state(mean, 2 * NDIM, "mean"), _cov(cov, 2 * NDIM)
        F = self.motion_mat
        q = np.diag(self.process_std(mean[3]) ** 2)
        return F @ mean, F @ cov @ F.T + q

    def project(self, mean, cov) -> tuple[np.ndarray, np.ndarray]:
        """The state's distribution in measurement space: ``H mean`` ``(4,)``, ``H cov H^T + R`` ``(4, 4)``."""
        mean, cov = _state(mean, 2 * NDIM, "mean"), _cov(cov, 2 * NDIM)
        H = self.update_mat
        r = np.diag(self.measurement_std(mean[3]) ** 2)
        return H @ mean, H @ cov @ H.T + r

    def update(self, mean, cov, measurement) -> tuple[np.ndarray, np.ndarray]:
        """Correct ``(mean, cov)`` with ``measurement`` (xyah ``(4,)``): gain ``K = cov H^T S^-1`` by a Cholesky solve
        with ``S`` (``project``'s covariance); ``mean + K (z - H mean)``, ``cov - K S K^T``."""
        mean, cov = _state(mean, 2 * NDIM, "mean"), _cov(cov, 2 * NDIM)
        z = _state(measurement, NDIM, "measurement")
        z_mean, s = self.project(mean, cov)
        # K S = cov H^T  <=>  S K^T = (cov H^T)^T  (S symmetric)
        gain = cho_solve(cho_factor(s, lower=True), (cov @ self.update_mat.T).T).T
        return mean + gain @ (z - z_mean), cov - gain @ s @ gain.T


def _state(x, n: int, name: str) -> np.ndarray:
    v = _f64(x)
    if v.shape != (n,):
        raise ValueError(f"{name}: expected shape ({n},), got {v.shape}")
    return v


def _cov(x, n: int) -> np.ndarray:
    c = _f64(x)
    if c.shape != (n, n):
        raise ValueError(f"cov: expected shape ({n}, {n}), got {c.shape}")
    return c


class BoxTrack:
    """One object's filter state in one video: ``(mean, cov)``, or ``None`` before ``initiate`` / after ``reset``.

        track = BoxTrack()
        track.initiate(first_box)          # xyxy
        for box in later_boxes:
            track.predict()                # one frame ahead
            candidates_iou = box_iou(track.predicted_box(), mask_boxes)
            track.update(box)              # the box chosen for this frame

    Tracks never share arrays (with each other or with the caller). The filter ``kf`` may be shared: it is stateless.
    """

    def __init__(self, kf: BoxKalmanFilter | None = None):
        self.filter = kf if kf is not None else BoxKalmanFilter()
        self.mean: np.ndarray | None = None
        self.cov: np.ndarray | None = None

    @property
    def initialized(self) -> bool:
        return self.mean is not None

    def _need(self, what: str):
        if not self.initialized:
            raise RuntimeError(f"BoxTrack.{what}: the track is not initialized (call initiate(box) first)")

    def initiate(self, xyxy) -> None:
        """Start (or restart) the track at an xyxy box. Its height must be positive and every coordinate finite: the
        initial covariance scales with the height, so a zero height would leave it singular."""
        xyah = xyxy_to_xyah(_state(xyxy, 4, "box"))
        if not np.all(np.isfinite(xyah)) or xyah[3] <= 0:
            raise ValueError(f"BoxTrack.initiate: needs a finite box with positive height, got {np.asarray(xyxy)}")
        self.mean, self.cov = self.filter.initiate(xyah)

    def predict(self) -> np.ndarray:
        """Advance one frame; returns the predicted xyxy box ``(4,)``."""
        self._need("predict")
        self.mean, self.cov = self.filter.predict(self.mean, self.cov)
        return self.predicted_box()

    def update(self, xyxy) -> np.ndarray:
        """Correct with the observed xyxy box (finite; after ``predict`` for this frame); returns the corrected box."""
        self._need("update")
        z = xyxy_to_xyah(_state(xyxy, 4, "box"))
        if not np.all(np.isfinite(z)):
            raise ValueError(f"BoxTrack.update: box must be finite, got {np.asarray(xyxy)}")
        self.mean, self.cov = self.filter.update(self.mean, self.cov, z)
        return self.predicted_box()

    def predicted_box(self) -> np.ndarray:
        """The xyxy box ``(4,)`` of the current mean (after ``predict``: the prediction for the new frame)."""
        self._need("predicted_box")
        return xyah_to_xyxy(self.mean[:NDIM])

    def reset(self) -> None:
        self.mean = self.cov = None
