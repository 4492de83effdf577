"""One policy for any number of agents: evaluate the runs of ``entity_transfer_spread.yaml``.

    marl sweep benchmarks/sweeps/entity_transfer_spread.yaml --out runs/entity_transfer
    python -m benchmarks.entity_transfer runs/entity_transfer [--episodes 100] [--out DIR]

For every seed of the policy trained with N=3 agents, and every N it is played at, three
rows: the N=3 policy unchanged (``marl eval RUN --override env.kwargs.N=n``), the policy
trained at that N with the same seed (played at its own N), and uniform random play in the
same env (``--random``; played once per N, since it depends on the env alone). Each
evaluation plays ``--episodes`` episodes from one evaluation
seed with actions sampled from the policy (``marl eval``'s default; ``--greedy`` takes the
most likely action). The table gives the mean per-agent return over the training seeds
with a 95% bootstrap interval over them, and IQM; ``results.json`` keeps every
evaluation.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import write_results
from marl.config import load
from marl.evaluate import evaluate
from marl.experiments.stats import iqm, mean, stratified_bootstrap_ci

SOURCE_N = 3
POLICIES = ("N=3 policy", "trained at N", "random")


def finished(run: Path) -> bool:
    """Whether ``run`` trained its whole budget (its last metrics line reaches it)."""
    lines = (run / "metrics.jsonl").read_text().splitlines() if (
        run / "metrics.jsonl").is_file() else []
    return bool(lines) and (json.loads(lines[-1])["env_steps"]
                            >= load(run / "config.yaml").train.total_env_steps)


def find_runs(sweep: Path) -> dict[int, dict[int, Path]]:
    """``{N: {seed: run_dir}}`` of the finished runs of a sweep over ``env.kwargs.N``
    (``<label>/seed_<s>``); a run still training (or stopped early) is left out."""
    runs: dict[int, dict[int, Path]] = {}
    for config in sorted(sweep.glob("*/seed_*/config.yaml")):
        run = config.parent
        match = re.search(r"env\.kwargs\.N=(\d+)", run.parent.name)
        if match is None or not finished(run):
            continue
        runs.setdefault(int(match.group(1)), {})[int(run.name.split("_")[1])] = run
    return runs


def _cell(values: list[float]) -> str:
    low, high = stratified_bootstrap_ci(values, mean)
    return f"{float(mean(np.asarray(values))):.2f} [{low:.2f}, {high:.2f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep", type=Path, help="the sweep's --out folder")
    parser.add_argument("--episodes", type=int, default=100)
    parser.add_argument("--greedy", action="store_true")
    parser.add_argument("--out", type=Path,
                        default=Path(__file__).parent / "results" / "entity_transfer")
    args = parser.parse_args()
    runs = find_runs(args.sweep)
    if SOURCE_N not in runs:
        parser.error(f"{args.sweep} holds no finished run with env.kwargs.N={SOURCE_N}; "
                     "run the sweep first (see this module's docstring)")
    rows: list[dict[str, Any]] = []
    played: dict[tuple[str, int], dict[str, Any]] = {}  # each distinct play runs once

    def play(run: Path, trained_n: int, n: int, random_play: bool) -> dict[str, Any]:
        """``run`` (trained with ``trained_n`` agents) played with ``n``; random play
        depends on the env alone (one evaluation seed), not on the run."""
        key = ("random" if random_play else str(run), n)
        if key not in played:
            played[key] = evaluate(run, episodes=args.episodes, greedy=args.greedy,
                                   random_play=random_play,
                                   overrides={} if trained_n == n else {"env.kwargs.N": n})
        return played[key]

    for n in sorted(runs):
        rows.append({"n": n, "seed": None, "which": "random",
                     **play(runs[SOURCE_N][min(runs[SOURCE_N])], SOURCE_N, n, True)})
        for seed, source in sorted(runs[SOURCE_N].items()):
            native = runs[n].get(seed)
            for policy, run, trained_n in (("N=3 policy", source, SOURCE_N),
                                           ("trained at N", native, n)):
                if run is None:
                    continue
                result = play(run, trained_n, n, False)
                rows.append({"n": n, "seed": seed, "which": policy, **result})
                print(f"N={n} seed {seed} {policy}: {result['episode_return_mean']:.2f}",
                      flush=True)
    lines = [f"Per-agent return over {args.episodes} episodes per evaluation "
             f"({'greedy' if args.greedy else 'sampled'} actions), mean over training seeds "
             "[95% bootstrap CI] and IQM; torch/simple_spread_v3, entity encoder over "
             "mpe_spread, shared, no one-hot ID, no observation normalisation.", "",
             "| N agents | policy | seeds | mean [95% CI] | IQM |", "|---|---|---|---|---|"]
    for n in sorted(runs):
        for policy in POLICIES:
            chosen = [r for r in rows if r["n"] == n and r["which"] == policy]
            values = [r["episode_return_mean"] for r in chosen]
            if policy == "random":  # one play: its interval is over episodes
                low, high = chosen[0]["ci95"]
                lines.append(f"| {n} | {policy} | - | {values[0]:.2f} [{low:.2f}, {high:.2f}] "
                             "(over episodes) | - |")
            elif values:
                lines.append(f"| {n} | {policy} | {len(values)} | {_cell(values)} | "
                             f"{float(iqm(np.asarray(values))):.2f} |")
    table = "\n".join(lines)
    write_results(args.out, "entity_transfer", rows, table,
                  {"episodes": args.episodes, "greedy": args.greedy,
                   "sweep": str(args.sweep)})
    print(table)
    print(f"wrote {args.out / 'results.json'} and results.md")


if __name__ == "__main__":
    main()
