"""One Euro filter (Casiez, Roussel, Vogel, CHI 2012), vectorised over any number of signals.

Low cut-off when the signal is still (no jitter), higher when it moves fast (little lag).
"""

from __future__ import annotations

import math

import numpy as np
from pydantic import Field

from facecast.configbase import StrictModel


class SmoothingConfig(StrictModel):
    enabled: bool = True
    min_cutoff: float = Field(1.0, gt=0, description="Hz; lower = steadier still face, more lag")
    beta: float = Field(0.05, ge=0, description="speed coefficient; higher = less lag on fast moves")
    d_cutoff: float = Field(1.0, gt=0, description="Hz; cut-off for the speed estimate")
    # The eyes' openness is read from the landmarks before the filter above and smoothed on its own:
    # a blink lasts 0.1-0.2 s, and the landmark filter (tuned to keep a still face still) kept only
    # 56 % of a 0.17 s blink's depth, this one 91 % (tests/test_tracking.py). On real videos, read by
    # tools/judge_animate.py, the character's eyes followed the performer's as well or better in 14
    # of 16 videos (the other two 0.005 lower), pooled correlation 0.830 -> 0.855.
    eyes_min_cutoff: float = Field(
        4.0, gt=0, description="Hz; the eye openness filter's cut-off when the eyes are still"
    )
    eyes_beta: float = Field(10.0, ge=0, description="the eye openness filter's speed coefficient (blinks pass)")


def _alpha(cutoff: np.ndarray | float, rate: float) -> np.ndarray | float:
    tau = 1.0 / (2.0 * math.pi * cutoff)
    return 1.0 / (1.0 + tau * rate)


class OneEuroFilter:
    def __init__(self, min_cutoff: float = 1.0, beta: float = 0.0, d_cutoff: float = 1.0) -> None:
        self.min_cutoff, self.beta, self.d_cutoff = min_cutoff, beta, d_cutoff
        self._x: np.ndarray | None = None
        self._dx: np.ndarray | None = None
        self._t: float | None = None

    @classmethod
    def from_config(cls, cfg: SmoothingConfig) -> OneEuroFilter:
        return cls(cfg.min_cutoff, cfg.beta, cfg.d_cutoff)

    def reset(self) -> None:
        self._x = self._dx = self._t = None

    def __call__(self, x: np.ndarray, t: float) -> np.ndarray:
        """Filter sample x taken at time t (seconds). Same shape and float type in and out (integers
        come out as float64); the result is a new array the caller may keep."""
        x = np.asarray(x)
        if not np.issubdtype(x.dtype, np.floating):
            x = x.astype(np.float64)
        if self._x is None or self._t is None or self._x.shape != x.shape or self._x.dtype != x.dtype or t <= self._t:
            self._x, self._dx, self._t = x.copy(), np.zeros_like(x), t
            return x.copy()
        rate = 1.0 / (t - self._t)
        # alpha(fc) = 1 / (1 + tau * rate) with tau = 1 / (2 pi fc), i.e. 2 pi fc / (2 pi fc + rate).
        a_d = _alpha(self.d_cutoff, rate)
        self._dx += a_d * ((x - self._x) * rate - self._dx)
        w = np.abs(self._dx)
        w *= 2.0 * math.pi * self.beta
        w += 2.0 * math.pi * self.min_cutoff  # 2 pi fc, per coordinate
        a = w / (w + rate)
        self._x += a * (x - self._x)
        self._t = t
        return self._x.copy()
