"""Training env-steps/s against the ceiling of stepping the same batched env at random.

    python -m benchmarks.throughput [--quick] [--out DIR] [--num-envs 8 32 64]
                                    [--vectors sync subprocess] [--algos ippo ...]
                                    [--compiled] [key=value ...]

For each env vector (in-process ``sync`` or ``subprocess`` workers) and ``num_envs``, in
fresh processes: (1) the ceiling, the same batched env stepped with uniform random actions
and nothing else; (2) training with each algorithm's default config, a real ``marl
train`` run timed from its own metric lines after the first iteration. All are repeated,
interleaved, and the ratio training / ceiling is the headline: how close the learner runs
to the env's own speed. ``--compiled`` trains each algorithm eagerly and compiled
(``train.compile``), with the compile time (left out of the rate) beside it.
Agent-steps/s = env-steps/s x agents.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.common import (
    add_output_arguments,
    emit,
    plot_vs_agents,
    run_fresh,
    summary,
    write_results,
)

MODULE = "benchmarks.throughput"
SHARING_MODES = ("groups.sharing=shared", "groups.sharing=independent,groups.backend=batched",
                 "groups.sharing=independent,groups.backend=fork",
                 "groups.sharing=independent,groups.backend=loop")
RECURRENT_VARIANTS = tuple(f"{name}:{mode}" for mode in SHARING_MODES
                           for name in ("ippo", "ippo_rnn"))
"""``--recurrent``: IPPO with the MLP default and with the GRU agent (hpset
``ippo_rnn_mpe``), in every sharing mode and backend."""
DEFAULT_ALGOS = ("ippo", "vdn")
"""Algorithms trained by default: on-policy IPPO and one off-policy method.

Each starts from its MPE hyperparameter set (``<algo>_mpe``) when the project ships one.
"""


def _ceiling(task: str, num_envs: int, steps: int, vector: str) -> dict[str, float]:
    from marl_envs import make, random_actions

    env = make(task, num_envs=num_envs, vector=vector, include_state=False)
    agents = sum(spec.num_agents for spec in env.groups.values())
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
    return {"env_steps_per_s": steps * num_envs / elapsed, "agents": agents}


def _training(task: str, num_envs: int, vector: str, algo: str, env_steps: int,
              overrides: list[str], iterations: int = 0) -> dict[str, float]:
    """Env-steps/s of a real ``marl train`` run, from its own metric lines.

    The rate is taken between the first and the last logged line, so start-up (env
    creation, the first rollout, compilation) is left out, whatever the algorithm.
    """
    import tempfile

    from marl.config import HPSETS, load, parse_overrides
    from marl.trainer import train

    name, _, extra = algo.partition(":")
    hpset = f"{name}_mpe" if f"{name}_mpe" in HPSETS else None
    algo_name = HPSETS[hpset].get("algo.name", name) if hpset else name
    with tempfile.TemporaryDirectory() as run_dir:
        config = load(hpset=hpset, overrides={
            "env.task": task, "env.num_envs": str(num_envs), "env.vector": vector,
            "algo.name": algo_name, "train.total_env_steps": str(env_steps),
            "train.log_every": "1", "train.checkpoint_every": str(10**12),
            "train.progress": "false", "run.tensorboard": "false", "run.dir": run_dir,
            "train.eval_every": "0",
            **parse_overrides([*overrides, *filter(None, extra.split(","))])})
        if iterations:  # the first (start-up, compiling) and `iterations` timed ones
            config = dataclasses.replace(config, train=dataclasses.replace(
                config.train, total_env_steps=(iterations + 1) * config.algo.num_steps
                * num_envs))
        train(config)
        lines = [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").open()]
    # lines[0] closes the first iteration (start-up); off-policy learners also skip the
    # replay warm-up, during which they only collect.
    warmup = getattr(config.algo, "warmup_steps", 0) if algo_name not in ("ippo", "mappo") else 0
    lines = [line for line in lines[1:] if line["env_steps"] > warmup]
    if len(lines) < 2:
        raise RuntimeError(f"only {len(lines)} metric lines after warm-up; raise --train-steps")
    first, last = lines[0], lines[-1]
    # graphs that compile later (the Q learners' one-graph update on its second update)
    # compile inside the window: their compile time is left out as the first graph's is
    compiling = last.get("compile_time", 0.0) - first.get("compile_time", 0.0)
    return {"env_steps_per_s": (last["env_steps"] - first["env_steps"])
            / (last["wall_time"] - first["wall_time"] - compiling),
            "compile_s": float(last.get("compile_time", 0.0))}


def _worker(args: argparse.Namespace) -> None:
    if args.kind == "ceiling":
        result = _ceiling(args.task, args.num_envs[0], args.steps, args.vectors[0])
    else:
        result = _training(args.task, args.num_envs[0], args.vectors[0], args.algos[0],
                           args.train_steps, args.overrides, args.train_iterations)
    emit(result)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", default="mpe2/simple_spread_v3")
    parser.add_argument("--num-envs", type=int, nargs="+", default=[8, 32, 64])
    parser.add_argument("--vectors", nargs="+", choices=("sync", "subprocess"),
                        default=["sync", "subprocess"], help="in-process or worker processes")
    parser.add_argument("--algos", nargs="+", default=list(DEFAULT_ALGOS),
                        help="what to train: NAME[:key=value,...], NAME an algo.name or the "
                        "stem of an hpset NAME_mpe (e.g. ippo_rnn), plus its own overrides")
    parser.add_argument("--recurrent", action="store_true",
                        help="train IPPO with MLP and GRU agents in every sharing mode and "
                        "backend (replaces --algos) and report GRU / MLP")
    parser.add_argument("--compiled", action="store_true",
                        help="train each of --algos eagerly and compiled (train.compile=false "
                        "and true; torch-vectorised tasks) and report compiled / eager")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=400, help="ceiling: batched steps")
    parser.add_argument("--train-iterations", type=int, default=0,
                        help="training: time this many iterations after the first, whatever "
                        "num_envs (replaces --train-steps; on-policy learners)")
    parser.add_argument("--train-steps", type=int, default=20_000,
                        help="training: env steps per measured run")
    add_output_arguments(parser, "throughput", "tiny sizes, for tests", ("ceiling", "training"))
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="config overrides for the training side")
    args = parser.parse_args()
    if args.worker:
        _worker(args)
        return
    if args.recurrent:
        args.algos = list(RECURRENT_VARIANTS)
    if args.quick:
        args.num_envs, args.repeats, args.steps, args.train_steps = [2], 1, 20, 120
        if args.recurrent:
            args.algos = [RECURRENT_VARIANTS[0], RECURRENT_VARIANTS[1]]
        args.algos = ["ippo"] if args.algos == list(DEFAULT_ALGOS) else args.algos
        args.overrides = [*args.overrides, "algo.num_steps=10"]
    if args.compiled:
        args.algos = [f"{algo}{',' if ':' in algo else ':'}train.compile={setting}"
                      for algo in args.algos for setting in ("false", "true")]
    rows: list[dict[str, Any]] = []
    common = ["--task", args.task, "--steps", str(args.steps),
              "--train-steps", str(args.train_steps),
              "--train-iterations", str(args.train_iterations)]
    for vector in args.vectors:
        for num_envs in args.num_envs:
            where = ["--vectors", vector, "--num-envs", str(num_envs)]
            measured: dict[str, list[float]] = {"ceiling": []}
            compile_s: dict[str, list[float]] = {}
            agents = 0
            for _ in range(args.repeats):  # interleaved, so load hits all kinds alike
                ceiling = run_fresh(MODULE, ["--kind", "ceiling", *common, *where])
                measured["ceiling"].append(ceiling["env_steps_per_s"])
                agents = int(ceiling["agents"])
                for algo in args.algos:
                    flags = [*args.overrides, "--kind", "training", "--algos", algo,
                             *common, *where]  # overrides first: --num-envs takes a list
                    result = run_fresh(MODULE, flags)
                    measured.setdefault(algo, []).append(result["env_steps_per_s"])
                    compile_s.setdefault(algo, []).append(result.get("compile_s", 0.0))
            ceiling_summary = summary(measured["ceiling"])
            for algo in args.algos:
                training = summary(measured[algo])
                rows.append({
                    "algo": algo, "vector": vector, "num_envs": num_envs, "agents": agents,
                    "ceiling": ceiling_summary, "training": training,
                    "agent_steps_per_s": training["median"] * agents,
                    "ratio": training["median"] / ceiling_summary["median"],
                    "compile_s": summary(compile_s[algo])["median"],
                    "raw": {"ceiling": measured["ceiling"], "training": measured[algo]},
                })
                print(f"{algo} {vector} num_envs {num_envs}: ceiling "
                      f"{ceiling_summary['median']:,.0f}, training {training['median']:,.0f} "
                      f"env-steps/s ({rows[-1]['ratio']:.0%})", flush=True)
    table = _table(rows)
    if args.compiled:
        table = f"{table}\n\n{_compiled_table(rows)}"
    recurrent = _recurrent_table(rows)
    if recurrent:
        table = f"{table}\n\n{recurrent}"
    write_results(args.out, "throughput", rows, table, {"task": args.task})
    panels: dict[str, dict[str, list[tuple[int, float]]]] = {}
    for row in rows:
        series = panels.setdefault(f"{args.task} ({row['vector']})", {})
        series.setdefault("ceiling (random actions)", [])
        if (row["num_envs"], row["ceiling"]["median"]) not in series["ceiling (random actions)"]:
            series["ceiling (random actions)"].append((row["num_envs"], row["ceiling"]["median"]))
        series.setdefault(f"{row['algo']} training", []).append(
            (row["num_envs"], row["training"]["median"]))
    plot_vs_agents(args.out / "throughput.png", panels, "env-steps/s", columns=2,
                   xlabel="num_envs")
    print(table)
    print(f"wrote {args.out / 'results.json'}, results.md and throughput.png")


def _table(rows: list[dict[str, Any]]) -> str:
    lines = ["| algo | vector | num_envs | ceiling env-steps/s (min-max) | training env-steps/s "
             "(min-max) | training agent-steps/s | ratio |", "|---|---|---|---|---|---|---|"]
    for row in rows:
        c, t = row["ceiling"], row["training"]
        lines.append(f"| {row['algo']} | {row['vector']} | {row['num_envs']} "
                     f"| {c['median']:,.0f} ({c['min']:,.0f}-{c['max']:,.0f}) "
                     f"| {t['median']:,.0f} ({t['min']:,.0f}-{t['max']:,.0f}) "
                     f"| {row['agent_steps_per_s']:,.0f} | {row['ratio']:.0%} |")
    return "\n".join(lines)


def _compiled_table(rows: list[dict[str, Any]]) -> str:
    """Compiled against eager training for every ``...train.compile=true`` row with a
    ``...train.compile=false`` twin at the same ``num_envs``."""
    eager = {(row["algo"].replace("train.compile=false", ""), row["vector"], row["num_envs"]):
             row for row in rows if "train.compile=false" in row["algo"]}
    lines = ["| algo | num_envs | ceiling env-steps/s | eager | compiled | compiled / eager "
             "| compiled / ceiling | compile s |", "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        key = (row["algo"].replace("train.compile=true", ""), row["vector"], row["num_envs"])
        base = eager.get(key)
        if "train.compile=true" not in row["algo"] or base is None:
            continue
        fast, slow = row["training"]["median"], base["training"]["median"]
        name = key[0].rstrip(":,")
        lines.append(f"| {name} | {row['num_envs']} | {row['ceiling']['median']:,.0f} "
                     f"| {slow:,.0f} | {fast:,.0f} | {fast / slow:.2f} | {row['ratio']:.0%} "
                     f"| {row['compile_s']:.0f} |")
    return "\n".join(lines)


def _recurrent_table(rows: list[dict[str, Any]]) -> str:
    """GRU / MLP training env-steps/s for every ``ippo_rnn:MODE`` row with an
    ``ippo:MODE`` row at the same vector and ``num_envs`` (empty when there is none)."""
    mlp = {(row["algo"].partition(":")[2], row["vector"], row["num_envs"]): row
           for row in rows if row["algo"].partition(":")[0] == "ippo"}
    lines = ["| sharing | vector | num_envs | MLP env-steps/s | GRU env-steps/s | GRU / MLP |",
             "|---|---|---|---|---|---|"]
    for row in rows:
        name, _, mode = row["algo"].partition(":")
        base = mlp.get((mode, row["vector"], row["num_envs"]))
        if name != "ippo_rnn" or base is None:
            continue
        ratio = row["training"]["median"] / base["training"]["median"]
        label = mode.replace("groups.sharing=", "").replace(",groups.backend=", " ") or "default"
        lines.append(f"| {label} | {row['vector']} | {row['num_envs']} "
                     f"| {base['training']['median']:,.0f} | {row['training']['median']:,.0f} "
                     f"| {ratio:.2f} |")
    return "\n".join(lines) if len(lines) > 2 else ""


if __name__ == "__main__":
    main()
