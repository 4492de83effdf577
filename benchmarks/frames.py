"""World against agent-centric frames on ``toy/grid_nav``: IPPO return against env steps.

    python -m benchmarks.frames [--quick] [--seeds 5] [--steps 80000] [--out DIR]

Both variants train the same IPPO (shared network, default hyperparameters) for the same
env-step budget; they differ only in ``env.kwargs.frame``: ``world`` (move up/down/left/
right, observe north-up) or ``agent`` (move forward/backward and turn, observe ahead-up).
Each (frame, seed) pair trains in a fresh process; pairs run frame after frame within a
seed, so background load falls on both alike. Scores per run: *final*, the mean episode
return (per agent) over the last three logged points, and *mean over training*, the mean
over every logged point (the normalised area under the curve, which rewards learning
early). Across seeds: mean and IQM, each with a 95% bootstrap interval
(:mod:`marl.experiments.stats`); the curves are the mean over seeds with a 95% pointwise
bootstrap band (:func:`marl.experiments.plots.plot_curves`).
"""

from __future__ import annotations

import argparse
import io
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.common import add_output_arguments, run_fresh, write_results
from marl.atomic import atomic_write_text

MODULE = "benchmarks.frames"
TASK = "toy/grid_nav"
FRAMES = ("world", "agent")
TASK_KWARGS = {"size": 10, "num_agents": 4, "max_steps": 40}
METRIC = "episode_return"
FINAL_POINTS = 3


def _worker(args: argparse.Namespace) -> None:
    from marl.config import load
    from marl.trainer import train

    run_dir = Path(args.run_dir)
    overrides: dict[str, Any] = {
        "env.task": TASK, "env.kwargs.frame": args.frame, "env.num_envs": str(args.num_envs),
        "train.total_env_steps": str(args.steps), "train.log_every": str(args.log_every),
        "train.checkpoint_every": str(args.steps), "train.progress": "false",
        "run.tensorboard": "false", "run.dir": str(run_dir), "seed": str(args.seed),
        "torch_threads": "1",
    }
    for key, value in TASK_KWARGS.items():
        overrides[f"env.kwargs.{key}"] = str(value)
    start = time.perf_counter()
    result = train(load(overrides=overrides), stream=io.StringIO())
    wall = time.perf_counter() - start
    atomic_write_text(run_dir / "run.json",
                      json.dumps({"descriptor": args.frame, "seed": args.seed}) + "\n")
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    print(json.dumps({
        "env_steps": [int(r["env_steps"]) for r in records if METRIC in r],
        "returns": [float(r[METRIC]) for r in records if METRIC in r],
        "wall_s": wall, "total_env_steps": result.env_steps,
        "threads": torch.get_num_threads(),
    }))


def best_possible_return(frame: str, episodes: int) -> float:
    """Mean per-agent return if every agent took a shortest path, other agents ignored.

    No policy does better: other agents can only block. A path is the Manhattan distance
    ``d`` to the goal; in the agent frame add one turn unless the goal lies on the
    agent's heading axis (forward or backward). Arriving pays ``goal_reward``, every
    step before it costs ``step_cost``. Averaged over the resets of ``episodes`` seeds.
    """
    from marl_envs.tasks import GridNavEnv
    from marl_envs.tasks.grid_nav import HEADINGS

    env = GridNavEnv(frame=frame, **TASK_KWARGS)
    returns = []
    for episode in range(episodes):
        env.reset(seed=episode)
        offset = env.goal - env.position  # [N, 2]
        steps = np.abs(offset).sum(-1)
        if frame == "agent":
            axis = np.abs(HEADINGS[env.heading])  # [N, 2], 1 on the heading's axis
            on_axis = (offset * (1 - axis) == 0).all(-1)
            steps = steps + ~on_axis
        returns.append(np.mean(env.goal_reward - env.step_cost * (steps - 1)))
    return float(np.mean(returns))


def _scores(rows: list[dict[str, Any]], frame: str) -> dict[str, np.ndarray]:
    runs = [row for row in rows if row["frame"] == frame]
    return {"final": np.array([np.mean(r["returns"][-FINAL_POINTS:]) for r in runs]),
            "mean_over_training": np.array([np.mean(r["returns"]) for r in runs])}


def _aggregate(rows: list[dict[str, Any]]) -> dict[str, Any]:
    from marl.experiments.stats import iqm, mean, stratified_bootstrap_ci

    summary: dict[str, Any] = {}
    for frame in FRAMES:
        summary[frame] = {}
        for name, scores in _scores(rows, frame).items():
            cells = {}
            for label, statistic in (("mean", mean), ("iqm", iqm)):
                low, high = stratified_bootstrap_ci(scores, statistic)
                cells[label] = {"value": float(statistic(scores)), "ci95": [low, high]}
            summary[frame][name] = {"seeds": int(scores.size), **cells,
                                    "per_seed": scores.tolist()}
    return summary


def _table(summary: dict[str, Any], best: dict[str, float], args: argparse.Namespace,
           wall: float) -> str:
    def cell(entry: dict[str, Any]) -> str:
        low, high = entry["ci95"]
        return f"{entry['value']:.3f} [{low:.3f}, {high:.3f}]"

    lines = [f"{TASK} {TASK_KWARGS}, IPPO (shared network, defaults), env.num_envs="
             f"{args.num_envs}, {args.steps:,} env steps per run, {args.seeds} seeds per frame; "
             f"episode return per agent; {wall / 60:.1f} min of runs in all.", "",
             "| frame | seeds | final: mean [95% CI] | final: IQM [95% CI] | "
             "mean over training: mean [95% CI] | mean over training: IQM [95% CI] | "
             "best possible |",
             "|---|---|---|---|---|---|---|"]
    for frame in FRAMES:
        final, area = summary[frame]["final"], summary[frame]["mean_over_training"]
        lines.append(f"| {frame} | {final['seeds']} | {cell(final['mean'])} | "
                     f"{cell(final['iqm'])} | {cell(area['mean'])} | {cell(area['iqm'])} | "
                     f"{best[frame]:.3f} |")
    lines += ["", f"Final: mean of the last {FINAL_POINTS} logged returns of a run. Mean over "
              "training: mean of every logged return (area under the curve). IQM: mean of "
              "the middle 50% of seeds. CIs: 95% bootstrap over seeds. Best possible: every "
              "agent on a shortest path with the others ignored (an upper bound), over the "
              f"first {args.episodes} resets; the agent frame pays a step for most turns."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=5, help="seeds per frame")
    parser.add_argument("--steps", type=int, default=80_000, help="env steps per run")
    parser.add_argument("--log-every", type=int, default=1_600, help="env steps between points")
    parser.add_argument("--num-envs", type=int, default=16, help="env.num_envs")
    parser.add_argument("--episodes", type=int, default=1_000,
                        help="resets averaged for the best possible return")
    add_output_arguments(parser, "frames", "1 seed, 400 steps, for tests")
    parser.add_argument("--runs", type=Path, default=None,
                        help="keep the run directories here (default: a temporary folder)")
    parser.add_argument("--frame", choices=FRAMES, help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--run-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        _worker(args)
        return
    if args.quick:
        args.seeds, args.steps, args.log_every, args.num_envs = 1, 400, 200, 4
        args.episodes = 20
    with tempfile.TemporaryDirectory() as scratch:
        runs = args.runs or Path(scratch)
        rows = _train_all(args, runs)
        wall = sum(row["wall_s"] for row in rows)
        summary = _aggregate(rows)
        best = {frame: best_possible_return(frame, args.episodes) for frame in FRAMES}
        table = _table(summary, best, args, wall)
        write_results(args.out, "frames", rows, table, {
            "task": TASK, "task_kwargs": TASK_KWARGS, "frames": list(FRAMES),
            "seeds": args.seeds, "env_steps_per_run": args.steps, "num_envs": args.num_envs,
            "log_every": args.log_every, "metric": f"{METRIC} (per agent)",
            "threads": rows[0]["threads"], "summary": summary,
            "best_possible": {"episodes": args.episodes, **best}})
        _plot(runs, args.out / "frames.png")
    print(table)
    print(f"wrote {args.out / 'results.json'}, results.md and frames.png")


def _train_all(args: argparse.Namespace, runs: Path) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for seed in range(1, args.seeds + 1):
        for frame in FRAMES:
            run_dir = runs / frame / f"seed{seed}"
            flags = ["--frame", frame, "--seed", str(seed), "--run-dir", str(run_dir),
                     "--steps", str(args.steps), "--log-every", str(args.log_every),
                     "--num-envs", str(args.num_envs)]
            rows.append({"frame": frame, "seed": seed, **run_fresh(MODULE, flags)})
            row = rows[-1]
            print(f"seed {seed} {frame}: final return {np.mean(row['returns'][-FINAL_POINTS:]):.3f}"
                  f" after {row['total_env_steps']:,} env steps, {row['wall_s']:.0f} s", flush=True)
    return rows


def _plot(runs: Path, path: Path) -> None:
    from marl.experiments.plots import plot_curves
    from marl.experiments.report import find_runs, group_runs

    groups = group_runs(find_runs(runs))
    plot_curves({frame: groups[frame] for frame in FRAMES}, METRIC, "env_steps", path)


if __name__ == "__main__":
    main()
