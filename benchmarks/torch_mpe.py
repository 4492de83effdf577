"""Torch-vectorised MPE against mpe2: env-steps/s over num_envs, and IPPO training speed.

    python -m benchmarks.torch_mpe [--quick] [--device cpu|cuda] [--out DIR]

Two measurements, each configuration in a fresh process, timed after a warm-up for about
``--seconds`` and repeated ``--repeats`` times (median, min, max):

* ``env``: the batched env of ``marl_envs.make`` stepped with uniform random actions
  (``include_state=False``), for each task as ``torch/<task>`` on ``--device`` and as
  ``mpe2/<task>`` (PettingZoo copies stepped in a Python loop, CPU). mpe2 is measured up
  to ``--mpe2-max-envs`` copies only: its speed per env-step does not change with the
  number of copies, while building and stepping tens of thousands of them takes minutes
  and gigabytes (each copy holds its own 700x700 drawing surface).
* ``training``: end-to-end IPPO (rollout and updates, default config) on
  ``simple_spread_v3``, in env-steps/s and agent-steps/s (times the 3 agents).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.common import add_output_arguments, run_fresh, summary, write_results

MODULE = "benchmarks.torch_mpe"
TASKS = ("simple_spread_v3", "simple_speaker_listener_v4", "simple_reference_v3")
TRAINING_TASK = "simple_spread_v3"
SPREAD_AGENTS = 3


def _random_actions(env: Any) -> dict[str, torch.Tensor]:
    """Uniform random actions made on the env's device (no host round trip)."""
    from gymnasium.spaces import Discrete

    actions = {}
    for name, spec in env.groups.items():
        batch = (env.num_envs, spec.num_agents)
        if isinstance(spec.action_space, Discrete):
            actions[name] = torch.randint(int(spec.action_space.n), batch, device=env.device)
        else:
            actions[name] = torch.rand(*batch, *spec.action_space.shape, device=env.device)
    return actions


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _env_speed(task: str, num_envs: int, seconds: float, device: str) -> float:
    """Env-steps/s of ``task`` stepped with random actions for about ``seconds``."""
    from marl_envs import make

    env = make(task, num_envs=num_envs, include_state=False, device=device)
    env.reset(seed=0)
    for _ in range(3):  # warm-up: allocator, first kernels
        env.step(_random_actions(env))
    _synchronize(env.device)
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        env.step(_random_actions(env))
        steps += 1
        if env.device.type == "cuda" and steps % 100 == 0:
            _synchronize(env.device)
    _synchronize(env.device)
    elapsed = time.perf_counter() - start
    env.close()
    return steps * num_envs / elapsed


def _training_speed(task: str, num_envs: int, seconds: float, device: str,
                    overrides: list[str]) -> float:
    """Env-steps/s of IPPO training (collect + update) for at least ``seconds``."""
    from marl.algos.ppo import PPO
    from marl.build import build_env
    from marl.config import load, parse_overrides
    from marl.host import configure_process
    from marl.logging import EpisodeTracker

    config = load(overrides={"env.task": task, "env.num_envs": str(num_envs), "device": device,
                             **parse_overrides(overrides)})
    torch.manual_seed(0)
    configure_process(config)  # as `marl train` does: threads, train.retain_memory
    torch_device = torch.device(device)
    env = build_env(config, torch_device)
    algo = PPO(env, config, torch_device)
    tracker = EpisodeTracker({n: s.num_agents for n, s in env.groups.items()}, num_envs,
                             torch_device)
    algo.collect(tracker)  # warm-up: first rollout and update
    algo.update(0.0)
    _synchronize(torch_device)
    steps, start = 0, time.perf_counter()
    while steps == 0 or time.perf_counter() - start < seconds:
        steps += algo.collect(tracker)
        algo.update(0.5)
        _synchronize(torch_device)
    elapsed = time.perf_counter() - start
    env.close()
    return steps / elapsed


def _worker(args: argparse.Namespace) -> None:
    torch.set_num_threads(1)  # the project default; training sets it again from its config
    if args.kind == "env":
        value = _env_speed(args.task, args.num_envs[0], args.seconds, args.device)
    else:
        value = _training_speed(args.task, args.num_envs[0], args.seconds, args.device,
                                args.overrides)
    print(json.dumps({"env_steps_per_s": value}))


def _measure(kind: str, task: str, num_envs: int, args: argparse.Namespace) -> dict[str, Any]:
    device = "cpu" if task.startswith("mpe2/") else args.device
    values = []
    for _ in range(args.repeats):
        flags = ["--kind", kind, "--task", task, "--num-envs", str(num_envs), "--device", device,
                 "--seconds", str(args.seconds), *args.overrides]
        values.append(run_fresh(MODULE, flags)["env_steps_per_s"])
    row = {"kind": kind, "task": task, "device": device, "num_envs": num_envs,
           "env_steps_per_s": summary(values), "raw": values}
    if kind == "training":
        row["agent_steps_per_s"] = summary([v * SPREAD_AGENTS for v in values])
    median = row["env_steps_per_s"]["median"]
    print(f"{kind:8s} {task:36s} {device:4s} num_envs {num_envs:6d}: {median:14,.0f} "
          "env-steps/s", flush=True)
    return row


def _env_table(rows: list[dict[str, Any]], tasks: list[str]) -> list[str]:
    lines = ["### Env-steps/s, random actions (median, min-max)", "",
             "| task | num_envs | mpe2 | torch | torch / mpe2 |", "|---|---|---|---|---|"]
    for task in tasks:
        by_size: dict[int, dict[str, dict[str, float]]] = {}
        for row in rows:
            if row["kind"] == "env" and row["task"].endswith("/" + task):
                by_size.setdefault(row["num_envs"], {})[row["task"].split("/")[0]] = (
                    row["env_steps_per_s"])
        for num_envs, cells in sorted(by_size.items()):
            text = {side: (f"{c['median']:,.0f} ({c['min']:,.0f}-{c['max']:,.0f})"
                           if (c := cells.get(side)) else "not run") for side in ("mpe2", "torch")}
            ratio = "-"
            if {"torch", "mpe2"} <= set(cells):
                speedup = cells["torch"]["median"] / cells["mpe2"]["median"]
                ratio = f"{speedup:,.0f}x" if speedup >= 10 else f"{speedup:.2f}x"
            lines.append(f"| {task} | {num_envs} | {text['mpe2']} | {text['torch']} | {ratio} |")
    return lines


def _training_table(rows: list[dict[str, Any]]) -> list[str]:
    lines = ["### IPPO training, end to end (default config; median, min-max)", "",
             "| task | device | num_envs | env-steps/s | agent-steps/s |", "|---|---|---|---|---|"]
    for row in rows:
        if row["kind"] == "training":
            env, agent = row["env_steps_per_s"], row["agent_steps_per_s"]
            lines.append(f"| {row['task']} | {row['device']} | {row['num_envs']} | "
                         f"{env['median']:,.0f} ({env['min']:,.0f}-{env['max']:,.0f}) | "
                         f"{agent['median']:,.0f} ({agent['min']:,.0f}-{agent['max']:,.0f}) |")
    return lines


def _plot(path: Path, rows: list[dict[str, Any]], tasks: list[str]) -> None:
    """Env-steps/s against num_envs, one panel per task, plus training agent-steps/s."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(tasks) + 1, figsize=(4.2 * (len(tasks) + 1), 3.6),
                                squeeze=False)
    panels = [(task, "env", f"/{task}", "env-steps/s") for task in tasks]
    panels.append(("IPPO training, simple_spread_v3", "training", "", "agent-steps/s"))
    for axis, (title, kind, suffix, ylabel) in zip(axes.flat, panels, strict=True):
        for side in ("mpe2", "torch"):
            points = sorted((r["num_envs"], r["env_steps_per_s"]["median"]
                             * (SPREAD_AGENTS if kind == "training" else 1)) for r in rows
                            if r["kind"] == kind and r["task"].startswith(side + "/")
                            and r["task"].endswith(suffix))
            if points:
                xs, ys = zip(*points, strict=True)
                axis.plot(xs, ys, marker="o", label=side)
        axis.set(xscale="log", yscale="log", xlabel="num_envs", ylabel=ylabel, title=title)
        axis.grid(True, which="both", alpha=0.3)
        axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
    parser.add_argument("--num-envs", type=int, nargs="+",
                        default=[1, 16, 256, 1024, 4096, 16384])
    parser.add_argument("--mpe2-max-envs", type=int, default=1024,
                        help="largest num_envs at which mpe2 is measured")
    parser.add_argument("--training-num-envs", type=int, nargs="+", default=[32, 256, 1024, 4096])
    parser.add_argument("--mpe2-training-num-envs", type=int, nargs="+", default=[32])
    parser.add_argument("--device", default="cpu", help="device of the torch tasks")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=1.5, help="timed span per measurement")
    add_output_arguments(parser, "torch_mpe", "tiny sizes, for tests", ("env", "training"))
    parser.add_argument("--task", help=argparse.SUPPRESS)
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="config overrides for the training side")
    args = parser.parse_args()
    if args.worker:
        _worker(args)
        return
    if args.quick:
        args.tasks, args.num_envs, args.mpe2_max_envs = [TRAINING_TASK], [4], 4
        args.training_num_envs, args.mpe2_training_num_envs = [8], []
        args.repeats, args.seconds = 1, 0.1
        args.overrides = [*args.overrides, "algo.num_steps=10"]
    rows: list[dict[str, Any]] = []
    for task in args.tasks:
        for num_envs in args.num_envs:
            rows.append(_measure("env", f"torch/{task}", num_envs, args))
            if num_envs <= args.mpe2_max_envs:
                rows.append(_measure("env", f"mpe2/{task}", num_envs, args))
    for num_envs in args.mpe2_training_num_envs:
        rows.append(_measure("training", f"mpe2/{TRAINING_TASK}", num_envs, args))
    for num_envs in args.training_num_envs:
        rows.append(_measure("training", f"torch/{TRAINING_TASK}", num_envs, args))
    table = "\n".join([*_env_table(rows, args.tasks), "", *_training_table(rows)])
    write_results(args.out, "torch_mpe", rows, table,
                  {"device": args.device, "threads": 1, "mpe2_max_envs": args.mpe2_max_envs,
                   "seconds": args.seconds, "repeats": args.repeats})
    _plot(args.out / "torch_mpe.png", rows, args.tasks)
    print(table)
    print(f"wrote {args.out / 'results.json'}, results.md and torch_mpe.png")


if __name__ == "__main__":
    main()
