"""Learning curves: the mean over seeds with a 95% bootstrap band, one line per group."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from marl.experiments.runs import Run
from marl.experiments.stats import pointwise_ci

_LABELS = {"env_steps": "env steps", "wall_time": "wall-clock time (s)"}


def aligned(runs: Sequence[Run], metric: str, x: str, points: int = 100
            ) -> tuple[np.ndarray, np.ndarray]:
    """Runs interpolated onto a common x grid: ``grid: [P]``, ``curves: [N, P]``.

    The grid spans the range every run covers. For ``env_steps`` it is the logged steps
    themselves when the runs logged the same steps (no interpolation then).
    """
    series = [run.series(metric, x) for run in runs]
    series = [(xs, ys) for xs, ys in series if xs.size]
    if not series:
        return np.zeros(0), np.zeros((0, 0))
    start = max(float(xs[0]) for xs, _ in series)
    stop = min(float(xs[-1]) for xs, _ in series)
    same = all(np.array_equal(xs, series[0][0]) for xs, _ in series)
    if x == "env_steps" and same:
        grid = series[0][0]
    else:
        grid = np.linspace(start, stop, points) if stop > start else np.asarray([stop])
    return grid, np.stack([np.interp(grid, xs, ys) for xs, ys in series])


def plot_curves(groups: dict[str, list[Run]], metric: str, x: str, path: Path) -> None:
    """Write a PNG of ``metric`` against ``x`` for every group."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(8, 5))
    for name, runs in groups.items():
        grid, curves = aligned(runs, metric, x)
        if grid.size == 0:
            continue
        center, low, high = pointwise_ci(curves)
        line = axes.plot(grid, center, label=f"{name} (n={curves.shape[0]})")[0]
        axes.fill_between(grid, low, high, color=line.get_color(), alpha=0.2)
    axes.set_xlabel(_LABELS.get(x, x))
    axes.set_ylabel(metric)
    axes.set_title(f"{metric}: mean over seeds, 95% bootstrap CI")
    axes.grid(alpha=0.3)
    if groups:
        axes.legend(fontsize="small")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
