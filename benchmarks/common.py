"""Shared plumbing for benchmarks: fresh processes, repetitions, JSON and Markdown output."""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from marl.atomic import atomic_write_text

SOURCE_ROOT = Path(__file__).resolve().parents[1]
"""The source checkout the benchmarks belong to (their sweeps run its git revision)."""
RESULTS = SOURCE_ROOT / "benchmarks" / "results"
"""Where results go by default, whatever the current directory: the README's tables."""


def machine() -> dict[str, Any]:
    """Where the numbers were taken: CPU, core count, library versions."""
    import numpy
    import pettingzoo

    info: dict[str, Any] = {
        "platform": platform.platform(), "processor": platform.processor() or platform.machine(),
        "cpu_count": _cpu_count(), "python": platform.python_version(),
        "torch": torch.__version__, "numpy": numpy.__version__,
        "pettingzoo": pettingzoo.__version__, "cuda": torch.cuda.is_available(),
        "date": time.strftime("%Y-%m-%d"),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def _cpu_count() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def add_output_arguments(parser: argparse.ArgumentParser, name: str, quick: str,
                         kinds: Sequence[str] = ()) -> None:
    """The flags every benchmark takes: ``--quick``, ``--out`` (default
    ``benchmarks/results/NAME`` of the source checkout) and, for those that time in fresh
    processes, the hidden ``--worker``/``--kind`` that :func:`run_fresh` passes to the child."""
    parser.add_argument("--quick", action="store_true", help=quick)
    parser.add_argument("--out", type=Path, default=RESULTS / name,
                        help=f"results folder (default: {RESULTS / name})")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    if kinds:
        parser.add_argument("--kind", choices=list(kinds), help=argparse.SUPPRESS)


def run_fresh(module: str, args: Sequence[str]) -> dict[str, Any]:
    """Run ``python -m module --worker ARGS`` in a new process; it prints one JSON line.

    Each configuration gets its own process: state left by one backend (thread pools,
    a used ``torch.jit.fork``) must not slow the next one down.
    """
    result = subprocess.run([sys.executable, "-m", module, "--worker", *args],
                            capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"benchmark worker {module} {' '.join(args)} failed:\n"
                           f"{result.stderr[-2000:]}")
    return dict(json.loads(result.stdout.strip().splitlines()[-1]))


def emit(result: dict[str, Any]) -> None:
    """A worker's last act: print its result as one JSON line and leave at once.

    ``os._exit`` skips the interpreter's teardown, where a process that used
    ``torch.jit.fork`` can abort ("terminate called without an active exception") after
    its measurement is already done.
    """
    import os

    print(json.dumps(result), flush=True)
    sys.stderr.flush()
    os._exit(0)


def summary(values: Sequence[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def write_results(out: Path, name: str, rows: list[dict[str, Any]], table: str,
                  extra: dict[str, Any] | None = None) -> None:
    """Write ``results.json`` (every raw measurement) and ``results.md`` (the table)."""
    out.mkdir(parents=True, exist_ok=True)
    payload = {"benchmark": name, "command": " ".join([Path(sys.executable).name, *sys.argv]),
               "machine": machine(), "rows": rows, **(extra or {})}
    atomic_write_text(out / "results.json", json.dumps(payload, indent=2) + "\n")
    atomic_write_text(out / "results.md", table + "\n")


def plot_vs_agents(path: Path, panels: dict[str, dict[str, list[tuple[int, float]]]],
                   ylabel: str, columns: int = 3, xlabel: str = "agents N") -> None:
    """One log-log panel per title: a line per series through ``(x, value)`` points."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = max(1, -(-len(panels) // columns))
    figure, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.4 * rows),
                                squeeze=False)
    for axis, (title, series) in zip(axes.flat, panels.items(), strict=False):
        for index, (label, points) in enumerate(series.items()):
            if points:  # the colour cycle has 10 entries: later series get another style
                xs, ys = zip(*sorted(points), strict=True)
                axis.plot(xs, ys, marker="os^"[index // 10 % 3],
                          linestyle=("-", "--", ":")[index // 10 % 3], label=label)
        axis.set(xscale="log", yscale="log", xlabel=xlabel, ylabel=ylabel, title=title)
        axis.set_xscale("log", base=2)
        axis.grid(True, which="both", alpha=0.3)
        axis.legend(fontsize=7)
    for axis in list(axes.flat)[len(panels):]:
        axis.set_visible(False)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
