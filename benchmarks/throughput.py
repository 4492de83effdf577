"""Training env-steps/s against the ceiling of stepping the same batched env at random.

    python -m benchmarks.throughput [--quick] [--out DIR] [--num-envs 8 16 32]

For each ``num_envs``, in a fresh process: (1) the ceiling, the same batched env stepped
with uniform random actions and nothing else; (2) IPPO training (rollout and updates)
with the default config. Both are timed after a warm-up, several times, and the ratio
training / ceiling is the headline: how close the learner runs to the env's own speed.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.common import run_fresh, summary, write_results

MODULE = "benchmarks.throughput"


def _ceiling(task: str, num_envs: int, steps: int) -> float:
    from marl_envs import make, random_actions

    env = make(task, num_envs=num_envs, include_state=False)
    current = env.reset(seed=0)
    generator = torch.Generator().manual_seed(0)

    def run(count: int) -> None:
        nonlocal current
        for _ in range(count):
            step = env.step(random_actions(env.groups, current.groups, generator))
            current = current._replace(groups={n: s.next for n, s in step.groups.items()})

    run(max(steps // 10, 5))
    start = time.perf_counter()
    run(steps)
    elapsed = time.perf_counter() - start
    env.close()
    return steps * num_envs / elapsed


def _training(task: str, num_envs: int, iterations: int, overrides: list[str]) -> float:
    from marl.algos.ppo import PPO
    from marl.config import load, parse_overrides
    from marl.logging import EpisodeTracker
    from marl.trainer import build_env

    config = load(overrides={"env.task": task, "env.num_envs": str(num_envs),
                             **parse_overrides(overrides)})
    torch.manual_seed(0)
    if config.torch_threads:
        torch.set_num_threads(config.torch_threads)
    env = build_env(config, torch.device("cpu"))
    algo = PPO(env, config, torch.device("cpu"))
    tracker = EpisodeTracker({n: s.num_agents for n, s in env.groups.items()}, num_envs,
                             torch.device("cpu"))
    algo.collect(tracker)  # warm-up: first rollout and update
    algo.update(0.0)
    steps, start = 0, time.perf_counter()
    for _ in range(iterations):
        steps += algo.collect(tracker)
        algo.update(0.5)
    elapsed = time.perf_counter() - start
    env.close()
    return steps / elapsed


def _worker(args: argparse.Namespace) -> None:
    if args.kind == "ceiling":
        value = _ceiling(args.task, args.num_envs[0], args.steps)
    else:
        value = _training(args.task, args.num_envs[0], args.iterations, args.overrides)
    print(json.dumps({"env_steps_per_s": value}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", default="mpe2/simple_spread_v3")
    parser.add_argument("--num-envs", type=int, nargs="+", default=[8, 16, 32])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=400, help="ceiling: batched steps")
    parser.add_argument("--iterations", type=int, default=4, help="training: iterations")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for tests")
    parser.add_argument("--out", type=Path, default=Path("results/throughput"))
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--kind", choices=("ceiling", "training"), help=argparse.SUPPRESS)
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="config overrides for the training side")
    args = parser.parse_args()
    if args.worker:
        _worker(args)
        return
    if args.quick:
        args.num_envs, args.repeats, args.steps, args.iterations = [2], 1, 20, 1
        args.overrides = [*args.overrides, "algo.num_steps=10"]
    rows: list[dict[str, Any]] = []
    for num_envs in args.num_envs:
        measured: dict[str, list[float]] = {"ceiling": [], "training": []}
        for _ in range(args.repeats):
            for kind in ("ceiling", "training"):  # interleaved, so load hits both alike
                flags = ["--kind", kind, "--task", args.task, "--num-envs", str(num_envs),
                         "--steps", str(args.steps), "--iterations", str(args.iterations),
                         *args.overrides]
                measured[kind].append(run_fresh(MODULE, flags)["env_steps_per_s"])
        ceiling, training = summary(measured["ceiling"]), summary(measured["training"])
        rows.append({"num_envs": num_envs, "ceiling": ceiling, "training": training,
                     "ratio": training["median"] / ceiling["median"], "raw": measured})
        print(f"num_envs {num_envs}: ceiling {ceiling['median']:,.0f}, training "
              f"{training['median']:,.0f} env-steps/s ({rows[-1]['ratio']:.0%})", flush=True)
    lines = ["| num_envs | ceiling env-steps/s (min-max) | training env-steps/s (min-max) "
             "| ratio |", "|---|---|---|---|"]
    for row in rows:
        c, t = row["ceiling"], row["training"]
        lines.append(f"| {row['num_envs']} | {c['median']:,.0f} ({c['min']:,.0f}-{c['max']:,.0f})"
                     f" | {t['median']:,.0f} ({t['min']:,.0f}-{t['max']:,.0f}) "
                     f"| {row['ratio']:.0%} |")
    write_results(args.out, "throughput", rows, "\n".join(lines), {"task": args.task})
    print("\n".join(lines))
    print(f"wrote {args.out / 'results.json'} and {args.out / 'results.md'}")


if __name__ == "__main__":
    main()
