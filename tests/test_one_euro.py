from __future__ import annotations

import numpy as np

from facecast.tracking.one_euro import OneEuroFilter


def test_still_signal_jitter_is_reduced():
    rng = np.random.default_rng(0)
    f = OneEuroFilter(min_cutoff=1.0, beta=0.0)
    noisy = 100 + rng.normal(0, 2.0, size=(300, 4))
    out = np.array([f(x, i / 60) for i, x in enumerate(noisy)])
    assert out[60:].std() < noisy[60:].std() / 3
    assert np.allclose(out[60:].mean(axis=0), 100, atol=1.0)


def test_fast_motion_lags_less_with_beta():
    t = np.arange(120) / 60
    ramp = 500 * t  # 500 px/s movement
    lag = {}
    for beta in (0.0, 0.5):
        f = OneEuroFilter(min_cutoff=1.0, beta=beta)
        out = np.array([f(np.array([x]), ti)[0] for x, ti in zip(ramp, t, strict=False)])
        lag[beta] = ramp[-1] - out[-1]
    assert lag[0.5] < lag[0.0] / 3


def test_shape_change_restarts_the_filter():
    f = OneEuroFilter()
    f(np.zeros(3), 0.0)
    out = f(np.ones(5), 0.1)
    assert out.shape == (5,) and np.all(out == 1)
