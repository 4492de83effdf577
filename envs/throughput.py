"""Env-steps per second of the batched adapters against the raw PettingZoo env.

Usage::

    python -m marl_envs.throughput --task mpe2/simple_spread_v3 --num-envs 8

Random actions in both cases; the raw loop samples with ``action_space.sample()`` and
resets a copy when its agent list empties, which is the least a training loop must do.
Variants are timed in interleaved rounds and the median round is reported, so that load
from other processes affects them alike.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from marl_envs.core import BatchedEnv
from marl_envs.registry import make, make_parallel_env
from marl_envs.sampling import random_actions


def raw_stepper(task: str, num_envs: int) -> Callable[[], None]:
    """One step of ``num_envs`` raw ParallelEnvs stepped in a Python loop."""
    envs = [make_parallel_env(task) for _ in range(num_envs)]
    for index, env in enumerate(envs):
        env.reset(seed=index)
        for agent in env.possible_agents:
            env.action_space(agent).seed(index)

    def one_step() -> None:
        for env in envs:
            env.step({agent: env.action_space(agent).sample() for agent in env.agents})
            if not env.agents:
                env.reset()

    return one_step


def adapter_stepper(env: BatchedEnv) -> Callable[[], None]:
    """One step of a batched env with random actions (including sampling them)."""
    generator = torch.Generator().manual_seed(0)
    observations = env.reset(seed=0).groups

    def one_step() -> None:
        nonlocal observations
        step = env.step(random_actions(env.groups, observations, generator))
        observations = {name: group.next for name, group in step.groups.items()}

    return one_step


def compare(
    steppers: dict[str, Callable[[], None]], seconds: float, rounds: int = 5
) -> dict[str, tuple[float, float]]:
    """Median ``(calls per wall-clock second, calls per CPU second of this process)`` of
    each stepper, over interleaved rounds of ``seconds / rounds`` each.

    The CPU-time rate is unaffected by other processes competing for the cores, but
    leaves out the work of subprocess workers.
    """
    rates: dict[str, list[tuple[float, float]]] = {label: [] for label in steppers}
    for _ in range(rounds):
        for label, function in steppers.items():
            for _ in range(5):
                function()
            calls = 0
            start, start_cpu = time.perf_counter(), time.process_time()
            while time.perf_counter() - start < seconds / rounds:
                function()
                calls += 1
            wall = time.perf_counter() - start
            cpu = time.process_time() - start_cpu
            rates[label].append((calls / wall, calls / cpu))
    return {
        label: (
            statistics.median(wall for wall, _ in values),
            statistics.median(cpu for _, cpu in values),
        )
        for label, values in rates.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="mpe2/simple_spread_v3")
    parser.add_argument("--num-envs", type=int, default=8)
    parser.add_argument("--num-workers", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=10.0, help="per variant")
    args = parser.parse_args()
    torch.set_num_threads(1)
    envs = {
        "sync": make(args.task, args.num_envs),
        "sync, no state": make(args.task, args.num_envs, include_state=False),
        f"subprocess W={args.num_workers}": make(
            args.task, args.num_envs, vector="subprocess", num_workers=args.num_workers
        ),
    }
    steppers = {"raw env": raw_stepper(args.task, args.num_envs)}
    steppers.update({label: adapter_stepper(env) for label, env in envs.items()})
    try:
        rates = compare(steppers, args.seconds)
    finally:
        for env in envs.values():
            env.close()
    raw_wall, raw_cpu = rates["raw env"]
    print(f"{'':20s} {'env-steps/s':>12s} {'':10s} {'per CPU-s':>10s}")
    for label, (wall, cpu) in rates.items():
        in_process = not label.startswith("subprocess")
        per_cpu = f"{cpu * args.num_envs:10.0f} ({cpu / raw_cpu:.0%})" if in_process else ""
        print(f"{label:20s} {wall * args.num_envs:12.0f} ({wall / raw_wall:4.0%} raw) {per_cpu}")


if __name__ == "__main__":
    main()
