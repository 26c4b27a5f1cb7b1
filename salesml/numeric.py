"""Small numeric functions shared by the models, the explanations and the synthetic worlds."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt


def sigmoid(x: npt.ArrayLike) -> np.ndarray:
    """The logistic function 1 / (1 + e^-x), log-odds -> probability, elementwise.

    Written as 0.5 (1 + tanh(x / 2)), which is the same function but never overflows (`np.exp(-x)`
    warns and saturates for x below about -709); agrees with the textbook form to 1 ulp.
    """
    return np.asarray(0.5 * (1.0 + np.tanh(0.5 * np.asarray(x, dtype=np.float64))))
