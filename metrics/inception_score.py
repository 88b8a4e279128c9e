"""Inception Score (Salimans et al. 2016): exp(E_x KL(p(y|x) || p(y))) over splits of the fakes."""
from __future__ import annotations

import numpy as np
import scipy.special


def inception_score(probs: np.ndarray, num_splits: int = 10) -> tuple[float, float]:
    """Mean and std over `num_splits` contiguous splits of exp(mean_x KL(p(y|x) || p_split(y))).

    `probs` [N, C] are softmax outputs; zero probabilities contribute 0 (0 log 0 = 0).
    """
    probs = np.asarray(probs, np.float64)
    assert probs.ndim == 2, probs.shape
    n = probs.shape[0]
    if n < num_splits:
        raise ValueError(f"IS needs at least {num_splits} images for {num_splits} splits, got {n}")
    scores = []
    for i in range(num_splits):
        part = probs[i * n // num_splits: (i + 1) * n // num_splits]  # [n_i, C]
        marginal = part.mean(axis=0, keepdims=True)                   # p(y) within the split
        kl = scipy.special.rel_entr(part, marginal).sum(axis=1)        # [n_i]
        scores.append(np.exp(kl.mean()))
    return float(np.mean(scores)), float(np.std(scores))
