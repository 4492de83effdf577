"""Where one PPO iteration's time goes: rollout and update, eager and compiled.

    python -m benchmarks.profile [--quick] [--out DIR] [--num-envs 16 1024]
                                 [--threads 1] [--iterations 5] [key=value ...]

For each ``num_envs`` and path (``train.compile=false`` and ``true``), in a fresh
process on ``torch/simple_spread_v3`` with the default config: build the learner, run two
iterations (compiling, on the compiled path), then time ``--iterations`` iterations of
``collect`` and ``update`` apart, and profile one more with ``torch.profiler``. The
profile's self CPU time is split into kinds -- compiled graphs (their fused kernels and
wrapper code), matrix products, other PyTorch operators, the optimiser and clipping, the
autograd engine, dynamo's guards and call overhead -- and what no operator accounts for
is Python (the interpreter running our loop). Results: JSON and a Markdown table.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from benchmarks.common import add_output_arguments, emit, run_fresh, summary, write_results

MODULE = "benchmarks.profile"
TASK = "torch/simple_spread_v3"
KINDS = ("compiled graphs", "matmul", "other ops", "optimiser", "autograd", "guards & calls",
         "python")


def _kind(name: str) -> str:
    if name.startswith(("## Call CompiledFxGraph", "Torch-Compiled Region", "CompiledFunction",
                        "graph_")):
        return "compiled graphs"
    if name in ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm"):
        return "matmul"
    if name.startswith(("Optimizer.", "aten::_fused_adam", "aten::linalg_vector_norm",
                        "aten::_foreach")):
        return "optimiser"
    if name.startswith(("autograd::", "torch::autograd")):
        return "autograd"
    if name.startswith(("TorchDynamo", "Pregraph", "AOTDispatcher")):
        return "guards & calls"
    return "other ops"


def _profiled(fn: Any) -> dict[str, float]:
    """Milliseconds of ``fn()`` by kind (self CPU time; the rest is Python)."""
    from torch.profiler import ProfilerActivity, profile

    start = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    wall = (time.perf_counter() - start) * 1e3
    kinds = dict.fromkeys(KINDS, 0.0)
    for event in prof.key_averages():
        kinds[_kind(event.key)] += event.self_cpu_time_total / 1e3
    kinds["python"] = max(wall - sum(kinds.values()), 0.0)
    return {**kinds, "wall": wall}


def _worker(num_envs: int, compiled: bool, threads: int, iterations: int,
            overrides: list[str]) -> dict[str, Any]:
    import torch

    from marl.algos.compiled import compile_seconds
    from marl.build import build_env, make_learner
    from marl.config import load, parse_overrides
    from marl.host import configure_process
    from marl.logging import EpisodeTracker

    config = load(overrides={"env.task": TASK, "env.num_envs": str(num_envs),
                             "train.compile": str(compiled).lower(),
                             "torch_threads": str(threads), **parse_overrides(overrides)})
    configure_process(config)  # as `marl train` does: threads, train.retain_memory
    device = torch.device("cpu")
    env = build_env(config, device)
    learner = make_learner(env, config, device)
    tracker = EpisodeTracker({n: s.num_agents for n, s in env.groups.items()}, env.num_envs,
                             device)
    for _ in range(2):
        learner.collect(tracker)
        learner.update(0.1)
    collect, update = [], []
    for _ in range(iterations):
        start = time.perf_counter()
        learner.collect(tracker)
        middle = time.perf_counter()
        learner.update(0.1)
        collect.append(middle - start)
        update.append(time.perf_counter() - middle)
    steps = config.algo.num_steps * num_envs
    rollout = _profiled(lambda: learner.collect(tracker))
    training = _profiled(lambda: learner.update(0.1))
    per_iteration = [c + u for c, u in zip(collect, update, strict=True)]
    return {"num_envs": num_envs, "compiled": compiled, "threads": threads,
            "retain_memory": config.train.retain_memory,
            "eager_reason": getattr(learner, "eager_reason", None),
            "collect_ms": summary([1e3 * c for c in collect]),
            "update_ms": summary([1e3 * u for u in update]),
            "env_steps_per_s": summary([steps / s for s in per_iteration]),
            "rollout_step_us": 1e6 * summary(collect)["median"] / config.algo.num_steps,
            "compile_s": compile_seconds(), "profile": {"collect": rollout, "update": training}}


def _table(rows: list[dict[str, Any]]) -> str:
    lines = ["| num_envs | path | env-steps/s | collect ms | µs per rollout step | update ms "
             "| compile s |", "|---|---|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row['num_envs']} | {'compiled' if row['compiled'] else 'eager'} "
                     f"| {row['env_steps_per_s']['median']:,.0f} "
                     f"| {row['collect_ms']['median']:.1f} | {row['rollout_step_us']:.0f} "
                     f"| {row['update_ms']['median']:.1f} | {row['compile_s']:.0f} |")
    lines += ["", "Profiled self CPU time of one iteration, ms by kind (python: what no "
              "operator accounts for):", "",
              "| num_envs | path | phase | " + " | ".join(KINDS) + " | total |",
              "|---|---|---|" + "---|" * (len(KINDS) + 1)]
    for row in rows:
        for phase in ("collect", "update"):
            kinds = row["profile"][phase]
            cells = " | ".join(f"{kinds[kind]:.1f}" for kind in KINDS)
            lines.append(f"| {row['num_envs']} | {'compiled' if row['compiled'] else 'eager'} "
                         f"| {phase} | {cells} | {kinds['wall']:.1f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num-envs", type=int, nargs="+", default=[16, 1024])
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: one core)")
    parser.add_argument("--iterations", type=int, default=5)
    parser.add_argument("--paths", nargs="+", choices=("eager", "compiled"),
                        default=["eager", "compiled"])
    add_output_arguments(parser, "profile", "tiny sizes, for tests")
    parser.add_argument("--compiled-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="config overrides (e.g. algo.num_steps=128)")
    args = parser.parse_args()
    if args.worker:
        emit(_worker(args.num_envs[0], args.compiled_worker, args.threads, args.iterations,
                     args.overrides))
        return
    if args.quick:
        args.num_envs, args.iterations = [2], 1
        args.overrides = [*args.overrides, "algo.num_steps=10"]
    rows = []
    for num_envs in args.num_envs:
        for path in args.paths:
            flags = [*args.overrides, "--num-envs", str(num_envs), "--threads",
                     str(args.threads), "--iterations", str(args.iterations)]
            if path == "compiled":
                flags.append("--compiled-worker")
            row = run_fresh(MODULE, flags)
            rows.append(row)
            print(f"num_envs {num_envs} {path}: {row['env_steps_per_s']['median']:,.0f} "
                  f"env-steps/s (collect {row['collect_ms']['median']:.1f} ms, update "
                  f"{row['update_ms']['median']:.1f} ms)", flush=True)
    table = _table(rows)
    write_results(args.out, "profile", rows, table,
                  {"task": TASK, "threads": args.threads, "overrides": args.overrides})
    print(table)
    print(f"wrote {args.out / 'results.json'} and results.md")


if __name__ == "__main__":
    main()
