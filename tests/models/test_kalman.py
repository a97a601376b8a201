import numpy as np
import pytest
import torch
from filterpy.kalman import KalmanFilter as FilterpyKalmanFilter

from models.sam2.kalman import BoxKalmanFilter, BoxTrack, box_iou, xyah_to_xyxy, xyxy_to_xyah

SP, SV = 1 / 20, 1 / 160  # the default noise weights, written out independently of the module


def _q(h):  # process noise of the brief / SAMURAI, built here (not by the module)
    return np.diag(np.array([SP * h, SP * h, 1e-2, SP * h, SV * h, SV * h, 1e-5, SV * h]) ** 2)


def _r(h):  # measurement noise
    return np.diag(np.array([SP * h, SP * h, 1e-1, SP * h]) ** 2)


def _cv_track(n, start=(100.0, 50.0, 140.0, 110.0), step=(2.0, 1.0)):
    """Noise-free xyxy boxes moving ``step`` px/frame, fixed 40×60 size."""
    k = np.arange(n, dtype=np.float64)[:, None]
    d = np.concatenate([k * step[0], k * step[1], k * step[0], k * step[1]], axis=1)
    return np.asarray(start) + d


def test_matches_filterpy_step_by_step():
    rng = np.random.default_rng(0)
    n = 30
    t = np.arange(n + 1, dtype=np.float64)
    truth = np.stack([200 + 3 * t, 120 - 1.5 * t, 0.7 + 0.002 * t, 60 + 1.0 * t], axis=1)  # moving, growing
    meas = truth + rng.normal(0, 1, truth.shape) * np.array([1.5, 1.5, 0.01, 1.0])

    ours = BoxKalmanFilter()
    mean, cov = ours.initiate(meas[0])
    ref = FilterpyKalmanFilter(dim_x=8, dim_z=4)
    ref.F = np.eye(8) + np.eye(8, k=4)  # constant velocity, dt = 1
    ref.H = np.eye(4, 8)
    ref.x, ref.P = mean.reshape(8, 1).copy(), cov.copy()

    def same(a, b):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=0)

    for z in meas[1:]:
        ref.Q = _q(ref.x[3, 0])  # height before the prediction
        ref.predict()
        mean, cov = ours.predict(mean, cov)
        same(mean, ref.x[:, 0])
        same(cov, ref.P)
        ref.R = _r(ref.x[3, 0])  # height of the predicted mean
        ref.update(z)  # filterpy: explicit inverse of S, Joseph-form covariance
        mean, cov = ours.update(mean, cov, z)
        same(mean, ref.x[:, 0])
        same(cov, ref.P)
    assert abs(mean[4] - 3) < 0.5 and abs(mean[5] + 1.5) < 0.5  # and it tracks (velocity roughly right)


def _run(boxes):
    kf = BoxKalmanFilter()
    mean, cov = kf.initiate(xyxy_to_xyah(boxes[0]))
    for b in boxes[1:]:
        mean, cov = kf.predict(mean, cov)
        mean, cov = kf.update(mean, cov, xyxy_to_xyah(b))
    return kf, mean, cov


def test_noise_free_constant_velocity_converges_and_extrapolates_linearly():
    boxes = _cv_track(27)
    kf, mean, cov = _run(boxes[:26])  # 25 updates (the error decays geometrically: 0.048 px after 20, 0.026 after 25)
    pred, _ = kf.predict(mean, cov)
    true_next = xyxy_to_xyah(boxes[26])
    assert np.all(np.abs(pred[:2] - true_next[:2]) < 0.05)
    assert np.all(np.abs(mean[4:6] - [2.0, 1.0]) < 0.05)
    assert np.allclose(pred[2:4], true_next[2:4]) and np.allclose(mean[6:8], 0)  # fixed size: nothing to move

    m, c = mean, cov
    for k in range(1, 6):  # predict only
        m_next, c_next = kf.predict(m, c)
        np.testing.assert_allclose(m_next[:4], mean[:4] + k * mean[4:], rtol=1e-13)
        np.testing.assert_array_equal(m_next[4:], mean[4:])  # velocity is carried as it is
        assert np.all(np.diag(c_next) > np.diag(c))  # uncertainty grows every frame, in every component
        assert np.linalg.det(c_next) > np.linalg.det(c)
        m, c = m_next, c_next


def test_backwards_in_time_gives_negated_velocity():
    boxes = _cv_track(21)
    _, fwd, _ = _run(boxes)
    _, bwd, _ = _run(boxes[::-1])
    assert np.all(np.abs(fwd[4:6] - [2.0, 1.0]) < 0.05)
    assert np.all(np.abs(bwd[4:6] - [-2.0, -1.0]) < 0.05)
    np.testing.assert_allclose(bwd[4:6], -fwd[4:6], rtol=1e-9)  # mirror images: same gains, negated innovations


def test_initiate_predict_project_noise_is_the_stated_diagonal():
    kf = BoxKalmanFilter()
    h = 80.0  # 2·h/20 = 8, 10·h/160 = 5, h/20 = 4, h/160 = 0.5
    z = np.array([10.0, 20.0, 0.5, h])
    mean, cov = kf.initiate(z)
    np.testing.assert_array_equal(mean, [10, 20, 0.5, h, 0, 0, 0, 0])
    p0 = np.array([8, 8, 1e-2, 8, 5, 5, 1e-5, 5], dtype=np.float64) ** 2
    np.testing.assert_allclose(np.diag(cov), p0, rtol=1e-15)
    np.testing.assert_array_equal(cov - np.diag(np.diag(cov)), 0)

    q = np.array([4, 4, 1e-2, 4, 0.5, 0.5, 1e-5, 0.5], dtype=np.float64) ** 2
    m1, c_q = kf.predict(mean, np.zeros((8, 8)))  # from a certain state the predicted covariance is Q alone
    np.testing.assert_allclose(np.diag(c_q), q, rtol=1e-15)
    np.testing.assert_array_equal(c_q - np.diag(np.diag(c_q)), 0)
    np.testing.assert_array_equal(m1, mean)  # zero velocity: nothing moves

    _, c1 = kf.predict(mean, cov)  # by hand, per (position, velocity) pair: F P0 F^T + Q
    for i in range(4):
        pos, vel = p0[i] + p0[i + 4] + q[i], p0[i + 4] + q[i + 4]
        np.testing.assert_allclose(c1[np.ix_([i, i + 4], [i, i + 4])], [[pos, p0[i + 4]], [p0[i + 4], vel]],
                                   rtol=1e-14)
    np.testing.assert_allclose(c1[0, 0], 64 + 25 + 16, rtol=1e-14)

    pm, s = kf.project(mean, np.zeros((8, 8)))
    np.testing.assert_array_equal(pm, z)
    np.testing.assert_allclose(np.diag(s), np.array([4, 4, 1e-1, 4]) ** 2, rtol=1e-15)
    np.testing.assert_array_equal(s - np.diag(np.diag(s)), 0)

    custom = BoxKalmanFilter(std_weight_position=0.1, std_weight_velocity=0.01)
    np.testing.assert_allclose(np.diag(custom.initiate(z)[1]), np.array([16, 16, 1e-2, 16, 8, 8, 1e-5, 8]) ** 2,
                               rtol=1e-14)


def test_box_conversions_and_iou():
    boxes = np.array([[10.0, 20.0, 50.0, 80.0], [0.0, 0.0, 3.0, 1.0]])
    xyah = xyxy_to_xyah(boxes)
    np.testing.assert_allclose(xyah, [[30, 50, 40 / 60, 60], [1.5, 0.5, 3.0, 1.0]], rtol=1e-15)
    np.testing.assert_allclose(xyah_to_xyxy(xyah), boxes, rtol=1e-14, atol=1e-12)
    one = xyxy_to_xyah([10, 20, 50, 80])  # a list, one box
    assert one.shape == (4,) and one.dtype == np.float64
    np.testing.assert_array_equal(one, xyah[0])
    t = xyxy_to_xyah(torch.tensor(boxes, dtype=torch.float32))  # torch, float32 -> float64 numpy
    assert isinstance(t, np.ndarray) and t.dtype == np.float64
    np.testing.assert_allclose(t, xyah, rtol=1e-6)

    flat = xyxy_to_xyah([5.0, 7.0, 9.0, 7.0])  # h = 0: aspect 0, no inf/NaN
    np.testing.assert_array_equal(flat, [7.0, 7.0, 0.0, 0.0])
    np.testing.assert_array_equal(xyah_to_xyxy(flat), [7.0, 7.0, 7.0, 7.0])  # comes back as a point (w lost)
    assert np.all(np.isfinite(xyxy_to_xyah(np.zeros((3, 4)))))
    with pytest.raises(ValueError):
        xyxy_to_xyah([1, 2, 3])

    ref = [0.0, 0.0, 2.0, 1.0]
    others = [[0, 0, 2, 1], [5, 5, 6, 6], [1, 0, 3, 1], [2, 0, 4, 1], [0.5, 0.25, 1.5, 0.75]]
    np.testing.assert_allclose(box_iou(ref, others), [1, 0, 1 / 3, 0, 0.25], rtol=1e-15)  # touching edges: 0
    np.testing.assert_allclose(box_iou(torch.tensor(ref), torch.tensor(others)), [1, 0, 1 / 3, 0, 0.25])
    np.testing.assert_array_equal(box_iou([1, 1, 1, 1], [[1, 1, 1, 1], [0, 0, 0, 0]]), [0, 0])  # union 0
    assert box_iou(ref, np.zeros((0, 4))).shape == (0,)


def test_box_tracks_are_independent_and_reset():
    kf = BoxKalmanFilter()
    first = np.array([10.0, 10.0, 30.0, 50.0])
    a, b = BoxTrack(kf), BoxTrack(kf)  # one shared (stateless) filter
    assert not a.initialized
    with pytest.raises(RuntimeError):
        a.predict()
    a.initiate(first)
    b.initiate(first)
    first[:] = 0  # the caller's array is not the track's
    mean_b, cov_b = b.mean.copy(), b.cov.copy()
    np.testing.assert_allclose(a.predicted_box(), [10, 10, 30, 50], rtol=1e-14)

    for k in range(1, 6):
        a.predict()
        a.update([10 + 3 * k, 10, 30 + 3 * k, 50])
    np.testing.assert_array_equal(b.mean, mean_b)
    np.testing.assert_array_equal(b.cov, cov_b)
    assert a.mean[4] > 1 and not np.shares_memory(a.mean, b.mean) and not np.shares_memory(a.cov, b.cov)

    box = a.predict()
    assert box.shape == (4,) and box[0] > 25  # keeps moving right
    np.testing.assert_array_equal(box, a.predicted_box())

    a.reset()
    assert not a.initialized and a.mean is None and a.cov is None
    with pytest.raises(RuntimeError):
        a.predicted_box()
    assert b.initialized
    with pytest.raises(ValueError):
        b.initiate([0, 5, 10, 5])  # zero height: the initial covariance would be singular
