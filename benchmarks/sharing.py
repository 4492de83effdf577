"""Shared, independent and selective parameters: learning curves over seeds, on several tasks.

    python -m benchmarks.sharing [--quick] [--out DIR] [--runs DIR] [--workers N]
                                 [--sweeps FILE ...] [--allow-dirty] [--report-only]

Each sweep file (default: ``benchmarks/sweeps/sharing_*.yaml``, shared against
independent, and ``selective_*.yaml``, selective sharing against both; one per task) is
run with ``marl sweep`` at the git revision of this source checkout, from whatever
directory the benchmark starts in, into ``RUNS/<name>`` (default ``RUNS``: ``OUT/runs``
when ``--out`` is given, else ``runs/bench-sharing`` of the source checkout; runs already
finished are skipped, so an interrupted benchmark resumes), then reported with ``marl report``: per
task a table of final and best return per setting (mean and IQM with 95% stratified
bootstrap CIs over seeds) and curves against env steps and against wall-clock seconds.
``results.json`` keeps every run's final return, best return, env steps and wall time.
``--report-only`` reports the runs already in ``RUNS`` without launching anything (a sweep
launched from a newer commit would start new runs, since run descriptors carry the git
revision).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

from benchmarks.common import RESULTS, SOURCE_ROOT, write_results

SWEEPS = SOURCE_ROOT / "benchmarks" / "sweeps"
FINAL_POINTS = 3
"""The final return of a run is the mean of its last three logged values (less noise)."""

QUICK_SWEEP = [
    {"hpset": "ippo_tiny", "groups.sharing": "shared", "groups.agent_id": [True, False],
     "train.total_env_steps": 512, "train.log_every": 128, "repeat": 2},
    {"hpset": "ippo_tiny", "groups.sharing": "independent", "groups.agent_id": False,
     "train.total_env_steps": 512, "train.log_every": 128, "repeat": 2},
    {"hpset": "ippo_tiny", "groups.sharing": "selective", "groups.selective_warmup": 128,
     "train.total_env_steps": 512, "train.log_every": 128, "repeat": 2},
]
"""A tiny sweep on the toy cooperative task, for tests: 4 settings x 2 seeds."""


def run_sweep(sweep: Path, runs: Path, workers: int | None, allow_dirty: bool) -> None:
    """``marl sweep SWEEP --out RUNS`` on this source checkout's revision, from any directory."""
    command = [sys.executable, "-m", "marl.cli", "sweep", str(sweep.resolve()),
               "--out", str(runs.resolve()), "--repo", str(SOURCE_ROOT)]
    command += ["--workers", str(workers)] if workers else []
    command += ["--allow-dirty"] if allow_dirty else []
    print("$", " ".join(command[1:]), flush=True)
    result = subprocess.run(command, check=False)
    if result.returncode != 0:
        raise SystemExit(f"sweep {sweep} ended with exit code {result.returncode}; its failed "
                         f"runs are listed in {runs}/jobs (launch again to retry them)")


def output_folders(out: Path | None, runs: Path | None) -> tuple[Path, Path]:
    """Absolute results and runs folders from ``--out`` and ``--runs`` (None: not given).

    Runs go under ``--out`` when it is given; by default results go to the committed
    ``benchmarks/results/sharing`` and runs to the git-ignored ``runs/bench-sharing`` of
    the source checkout, whatever the current directory.
    """
    if runs is None:
        runs = out / "runs" if out is not None else SOURCE_ROOT / "runs" / "bench-sharing"
    return (out or RESULTS / "sharing").resolve(), runs.resolve()


def task_rows(runs: Path, task: str) -> list[dict[str, Any]]:
    """One row per run: its setting, seed, final and best return, env steps, wall time."""
    from marl.experiments.report import find_runs

    rows = []
    for run in find_runs(runs):
        steps, returns = run.series("episode_return", "env_steps")
        _, wall = run.series("wall_time", "env_steps")
        if returns.size == 0:
            continue
        rows.append({"task": task, "setting": run.group, "seed": run.seed,
                     "final_return": float(returns[-FINAL_POINTS:].mean()),
                     "best_return": float(returns.max()), "env_steps": int(steps[-1]),
                     "wall_time_s": float(wall[-1]) if wall.size else None,
                     "run_dir": str(run.path)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sweeps", type=Path, nargs="+",
                        default=sorted(SWEEPS.glob("sharing_*.yaml"))
                        + sorted(SWEEPS.glob("selective_*.yaml")))
    parser.add_argument("--runs", type=Path, default=None,
                        help="where the sweeps' runs go, resumable (default: OUT/runs with "
                             "--out, else runs/bench-sharing of the source checkout)")
    parser.add_argument("--workers", type=int, default=None, help="parallel runs")
    parser.add_argument("--allow-dirty", action="store_true",
                        help="run from a working tree with uncommitted changes")
    parser.add_argument("--report-only", action="store_true",
                        help="report the runs already in --runs; launch nothing")
    parser.add_argument("--quick", action="store_true", help="a tiny sweep, for tests")
    parser.add_argument("--out", type=Path, default=None,
                        help=f"results folder (default: {RESULTS / 'sharing'})")
    args = parser.parse_args()
    args.out, args.runs = output_folders(args.out, args.runs)

    from marl.experiments.report import write_report

    with tempfile.TemporaryDirectory() as scratch:
        if args.quick:
            quick = Path(scratch) / "sharing_quick.yaml"
            quick.write_text(yaml.safe_dump(QUICK_SWEEP, sort_keys=False))
            args.sweeps, args.allow_dirty = [quick], True
        rows: list[dict[str, Any]] = []
        sections = []
        for sweep in args.sweeps:
            name = sweep.stem.removeprefix("sharing_")
            runs = args.runs / name
            if not args.report_only:
                run_sweep(sweep, runs, args.workers, args.allow_dirty)
            elif not runs.is_dir():
                raise SystemExit(f"--report-only: no runs in {runs}; launch the benchmark "
                                 "without --report-only first")
            table = write_report(runs, args.out / name, final_points=FINAL_POINTS)
            rows += task_rows(runs, name)
            curves = f"{name}/curves_episode_return"
            sections.append(f"### {name}\n\n{table}\n\n"
                            f"![return vs env steps]({curves}_env_steps.png)\n"
                            f"![return vs wall-clock]({curves}_wall_time.png)")
    text = "\n\n".join(sections)
    write_results(args.out, "sharing", rows, text,
                  {"final_points": FINAL_POINTS, "sweeps": [str(s) for s in args.sweeps]})
    print(text)
    print(f"wrote {args.out / 'results.json'}, results.md and per-task reports")


if __name__ == "__main__":
    main()
