"""Training time per iteration and peak memory against the number of agents N.

    python -m benchmarks.scaling [--quick] [--out DIR] [--n 2 8 32] [--iterations 3]

For each N (``env.kwargs.N`` of ``mpe2/simple_spread_v3``) and each network kind (shared
with one-hot IDs, independent ``batched``, independent ``fork``), a fresh process builds
IPPO, runs one warm-up iteration, then times ``--iterations`` iterations, the rollout
(``collect``) and the update apart: the Python env dominates the rollout and grows with N
whatever the network, so only the update time compares the networks. Peak memory is the
process's ``ru_maxrss`` (and ``torch.cuda.max_memory_allocated`` on GPU), with the RSS
before the learner was built alongside, so the learner's share can be read off.
"""

from __future__ import annotations

import argparse
import resource
import time
from typing import Any

import torch
from torch.nn.utils import parametrize

from benchmarks.common import (
    add_output_arguments,
    emit,
    plot_vs_agents,
    run_fresh,
    summary,
    write_results,
)

MODULE = "benchmarks.scaling"
KINDS = {"shared": ("shared", "batched"), "batched": ("independent", "batched"),
         "fork": ("independent", "fork"), "selective": ("selective", "batched")}
"""Kind -> (``groups.sharing``, ``groups.backend``). ``selective`` is timed with its K
networks in place (``--clusters``, agents dealt round-robin), as after its warm-up."""


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _worker(args: argparse.Namespace) -> None:
    from marl.algos.ppo import PPO
    from marl.build import build_env, resolve_device
    from marl.config import load, parse_overrides
    from marl.logging import EpisodeTracker

    sharing, backend = KINDS[args.kind]
    config = load(overrides={
        "env.task": args.task, "env.kwargs.N": str(args.n[0]),
        "env.num_envs": str(args.num_envs), "algo.num_steps": str(args.num_steps),
        "groups.sharing": sharing, "groups.backend": backend,
        "torch_threads": str(args.threads), "device": args.device,
        **parse_overrides(args.overrides)})
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    device = resolve_device(config.device)
    env = build_env(config, device)
    rss_before = _rss_mib()
    algo = PPO(env, config, device)
    if sharing == "selective":
        from marl.selective.share import set_index

        for name, spec in env.groups.items():
            index = torch.arange(spec.num_agents) % min(args.clusters, spec.num_agents)
            algo.optimizer.swap_parameters(set_index(list(algo.modules().values()), name,
                                                     index))
    tracker = EpisodeTracker({n: s.num_agents for n, s in env.groups.items()},
                             config.env.num_envs, device)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    times: dict[str, list[float]] = {"rollout": [], "update": [], "iteration": []}
    for iteration in range(args.iterations + 1):  # the first is a warm-up, not recorded
        start = time.perf_counter()
        with parametrize.cached():  # as the trainer collects (selective gathers once)
            steps = algo.collect(tracker)
        sync()
        middle = time.perf_counter()
        algo.update(0.5)
        sync()
        end = time.perf_counter()
        if iteration:
            times["rollout"].append((middle - start) * 1e3)
            times["update"].append((end - middle) * 1e3)
            times["iteration"].append((end - start) * 1e3)
    env.close()
    result: dict[str, Any] = {
        **{key: summary(values) for key, values in times.items()}, "raw_ms": times,
        "env_steps_per_iteration": steps, "device": str(device),
        "threads": torch.get_num_threads(), "rss_before_learner_mib": rss_before,
        "peak_rss_mib": _rss_mib(),
        "parameters": sum(p.numel() for p in algo.groups.parameters()),
    }
    if device.type == "cuda":
        result["cuda_max_allocated_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
    emit(result)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", default="mpe2/simple_spread_v3")
    parser.add_argument("--n", type=int, nargs="+", default=[2, 4, 8, 16, 32, 64])
    parser.add_argument("--kinds", nargs="+", choices=list(KINDS), default=list(KINDS))
    parser.add_argument("--num-envs", type=int, default=2)
    parser.add_argument("--num-steps", type=int, default=10, help="algo.num_steps")
    parser.add_argument("--iterations", type=int, default=3, help="timed iterations")
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    parser.add_argument("--device", default="cpu", help="'cpu', 'cuda' or 'auto'")
    parser.add_argument("--clusters", type=int, default=4,
                        help="selective: K networks (agents dealt round-robin)")
    add_output_arguments(parser, "scaling", "tiny grid, for tests", KINDS)
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="further config overrides, e.g. algo.update_epochs=2")
    args = parser.parse_args()
    if args.worker:
        _worker(args)
        return
    if args.quick:
        args.n, args.iterations, args.num_steps = [2], 1, 4
    rows: list[dict[str, Any]] = []
    for n in args.n:
        for kind in args.kinds:  # back to back, so background load hits all alike
            flags = ["--kind", kind, "--task", args.task, "--n", str(n), "--num-envs",
                     str(args.num_envs), "--num-steps", str(args.num_steps), "--iterations",
                     str(args.iterations), "--threads", str(args.threads), "--device",
                     args.device, "--clusters", str(args.clusters), *args.overrides]
            rows.append({"kind": kind, "n": n, **run_fresh(MODULE, flags)})
            row = rows[-1]
            print(f"N={n} {kind}: rollout {row['rollout']['median']:,.0f} ms, update "
                  f"{row['update']['median']:,.0f} ms, peak RSS {row['peak_rss_mib']:,.0f} "
                  "MiB", flush=True)
    lines = [f"{args.task}, env.num_envs={args.num_envs}, algo.num_steps={args.num_steps}, "
             f"selective K={args.clusters}, torch threads {args.threads}, device "
             f"{rows[0]['device']}; ms per iteration (median of {args.iterations}), memory "
             "in MiB.", "",
             "| N | kind | rollout ms | update ms | iteration ms | peak RSS | RSS before "
             "learner | parameters |", "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row['n']} | {row['kind']} | {row['rollout']['median']:,.1f} | "
                     f"{row['update']['median']:,.1f} | {row['iteration']['median']:,.1f} | "
                     f"{row['peak_rss_mib']:,.0f} | {row['rss_before_learner_mib']:,.0f} | "
                     f"{row['parameters']:,} |")
    def value(row: dict[str, Any], key: str) -> float:
        return float(row[key]["median"] if isinstance(row[key], dict) else row[key])

    panels = {
        label: {kind: [(r["n"], value(r, key)) for r in rows if r["kind"] == kind]
                for kind in args.kinds}
        for label, key in (("update ms", "update"), ("rollout ms", "rollout"),
                           ("peak RSS MiB", "peak_rss_mib"))}
    table = "\n".join(lines)
    write_results(args.out, "scaling", rows, table,
                  {"task": args.task, "num_envs": args.num_envs, "num_steps": args.num_steps,
                   "iterations": args.iterations, "threads": args.threads,
                   "unit": "milliseconds per iteration; MiB"})
    plot_vs_agents(args.out / "scaling.png", panels, "value", columns=3)
    print(table)
    print(f"wrote {args.out / 'results.json'}, results.md and scaling.png")


if __name__ == "__main__":
    main()
