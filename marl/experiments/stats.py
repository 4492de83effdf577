"""Aggregate statistics over seeds, as rliable defines them (Agarwal et al., 2021).

https://arxiv.org/abs/2108.13264 — IQM is the mean of the middle 50% of scores (rliable
computes it as ``scipy.stats.trim_mean(scores, 0.25)``); confidence intervals come from
a *stratified* percentile bootstrap, which resamples runs within each task. With one
task that is a plain bootstrap over seeds, and for the mean it draws exactly the same
resamples as :func:`marl.evaluate.bootstrap_ci` (same seed -> same interval).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

Statistic = Callable[[np.ndarray], np.ndarray]


def mean(scores: np.ndarray) -> np.ndarray:
    """Mean over the last axis. ``scores: [..., N]`` -> ``[...]``."""
    return np.asarray(scores, dtype=np.float64).mean(axis=-1)


def iqm(scores: np.ndarray) -> np.ndarray:
    """Interquartile mean over the last axis: drop ``floor(N/4)`` scores at each end, average.

    ``scores: [..., N]`` -> ``[...]``. Matches ``scipy.stats.trim_mean(scores, 0.25, axis=-1)``;
    with fewer than 4 scores nothing is dropped and it equals the mean.
    """
    data = np.sort(np.asarray(scores, dtype=np.float64), axis=-1)
    cut = int(0.25 * data.shape[-1])
    return data[..., cut:data.shape[-1] - cut].mean(axis=-1)


def stratified_bootstrap_ci(scores: Sequence[float] | np.ndarray, statistic: Statistic = mean,
                            confidence: float = 0.95, resamples: int = 10_000,
                            seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic`` over runs, stratified by task.

    ``scores: [N]`` (N runs of one task) or ``[N, M]`` (N runs of each of M tasks). Each
    resample draws N runs with replacement within every task, then applies ``statistic``
    to all N * M drawn scores. With one run the interval is the point itself; with none,
    NaN.
    """
    data = np.asarray(scores, dtype=np.float64)
    if data.ndim == 1:
        data = data[:, None]
    if data.ndim != 2:
        raise ValueError(f"scores: expected [runs] or [runs, tasks], got shape {data.shape}")
    num_runs, num_tasks = data.shape
    if num_runs < 2:
        point = float(statistic(data.reshape(-1))) if num_runs else float("nan")
        return point, point
    rng = np.random.default_rng(seed)
    index = rng.integers(0, num_runs, (resamples, num_runs, num_tasks))
    drawn = np.take_along_axis(data[None], index, axis=1)  # [resamples, N, M]
    values = statistic(drawn.reshape(resamples, -1))
    alpha = (1 - confidence) / 2
    low, high = np.quantile(values, [alpha, 1 - alpha])
    return float(low), float(high)


def pointwise_ci(curves: np.ndarray, confidence: float = 0.95, resamples: int = 2_000,
                 seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean curve and its bootstrap band over seeds. ``curves: [N, P]`` -> 3 x ``[P]``."""
    data = np.asarray(curves, dtype=np.float64)
    center = data.mean(axis=0)
    if data.shape[0] < 2:
        return center, center.copy(), center.copy()
    rng = np.random.default_rng(seed)
    index = rng.integers(0, data.shape[0], (resamples, data.shape[0]))
    means = data[index].mean(axis=1)  # [resamples, P]
    alpha = (1 - confidence) / 2
    low, high = np.quantile(means, [alpha, 1 - alpha], axis=0)
    return center, low, high
