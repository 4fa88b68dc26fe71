"""Once per inference batch, in the inference thread: logits -> ranked probabilities."""

from __future__ import annotations

import numpy as np


def ranked_softmax(logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Softmax probabilities ``(N, K)`` sorted descending per row, and their class indices."""
    z = logits.astype(np.float64)
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    probs = e / e.sum(axis=1, keepdims=True)
    order = np.argsort(-probs, axis=1, kind="stable")
    return np.take_along_axis(probs, order, axis=1), order
