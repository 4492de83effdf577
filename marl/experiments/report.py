"""Reports over a runs directory: a Markdown table, learning curves, marl-eval JSON.

Runs are the folders holding both ``metrics.jsonl`` and ``config.yaml``. They group by the
``descriptor`` in their ``run.json`` (written by ``marl sweep``); a run without one
groups with the runs whose config is the same except for ``seed`` and ``run.*``.

Definitions. *Final*: the mean of a run's last ``final_points`` logged values of the
metric (default 1: the last logged value). *Best*: the largest logged value. Across the
seeds of a group: mean and IQM, each with a 95% stratified bootstrap interval (one
task, so a bootstrap over seeds), see :mod:`marl.experiments.stats`.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from marl.atomic import atomic_write_text
from marl.config import ConfigError, flatten
from marl.config_rules import yaml_error_text
from marl.experiments.plots import plot_curves
from marl.experiments.runs import Run
from marl.experiments.stats import iqm, mean, stratified_bootstrap_ci

MIN_SEEDS = 3
_IGNORED_KEYS = ("seed", "run.dir", "run.resume")


def _read_records(path: Path) -> list[dict[str, Any]]:
    records = []
    # A crash can cut the last line short, even inside a multi-byte character.
    for line in path.read_text(errors="replace").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def _read_mapping(path: Path, kind: str) -> dict[str, Any]:
    """The mapping in a run's ``config.yaml`` (YAML) or ``run.json`` (JSON)."""
    fix = f"fix or move away the run folder {path.parent}"
    try:
        text = path.read_text()
        tree = json.loads(text) if kind == "json" else yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {yaml_error_text(error)}; {fix}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: not valid {kind.upper()}: {error}; {fix}") from None
    if tree is None:
        return {}
    if not isinstance(tree, dict):
        raise ConfigError(f"{path}: expected a mapping, got {type(tree).__name__}; {fix}")
    return tree


def _fallback_group(flat: dict[str, Any]) -> str:
    """A name for runs without ``run.json``: task, algorithm, sharing and a config hash."""
    kept = {k: v for k, v in flat.items() if k not in _IGNORED_KEYS}
    digest = hashlib.sha256(json.dumps(kept, sort_keys=True, default=str).encode()).hexdigest()
    task = str(flat.get("env.task", "task")).replace("/", "-")
    return f"{task}__{flat.get('algo.name')}__{flat.get('groups.sharing')}__{digest[:8]}"


def find_runs(root: Path) -> list[Run]:
    """Every run directory under ``root`` (``root`` itself included), sorted by path."""
    runs = []
    for metrics in sorted(root.rglob("metrics.jsonl")):
        folder = metrics.parent
        if not (folder / "config.yaml").is_file() or "checkouts" in folder.relative_to(
                root).parts:
            continue
        flat = flatten(_read_mapping(folder / "config.yaml", "yaml"))
        info_path = folder / "run.json"
        info = _read_mapping(info_path, "json") if info_path.is_file() else {}
        group = info.get("descriptor") or _fallback_group(flat)
        seed = info.get("seed", flat.get("seed", 0))
        if isinstance(seed, bool) or not isinstance(seed, int):
            source = info_path if "seed" in info else folder / "config.yaml"
            raise ConfigError(f"{source}: seed: expected an integer, got {seed!r}; fix or "
                              f"move away the run folder {folder}")
        runs.append(Run(folder, str(group), seed, str(flat.get("env.task", "")),
                        _read_records(metrics)))
    return runs


def group_runs(runs: Sequence[Run]) -> dict[str, list[Run]]:
    """Runs by group name, groups in name order, runs in seed order."""
    groups: dict[str, list[Run]] = {}
    for run in runs:
        groups.setdefault(run.group, []).append(run)
    return {name: sorted(groups[name], key=lambda r: r.seed) for name in sorted(groups)}


def run_scores(runs: Sequence[Run], metric: str, final_points: int = 1
               ) -> tuple[np.ndarray, np.ndarray]:
    """Final and best value of each run that logged ``metric``: two ``[N]`` arrays."""
    finals, bests = [], []
    for run in runs:
        _, values = run.series(metric, "env_steps")
        if values.size:
            finals.append(values[-final_points:].mean())
            bests.append(values.max())
    return np.asarray(finals), np.asarray(bests)


def _cell(scores: np.ndarray, statistic: Any) -> str:
    if scores.size == 0:
        return "n/a"
    low, high = stratified_bootstrap_ci(scores, statistic)
    return f"{float(statistic(scores)):.4g} [{low:.4g}, {high:.4g}]"


def table(groups: dict[str, list[Run]], metric: str, final_points: int = 1) -> str:
    """The Markdown table: per group, final and best value (mean, IQM, 95% CIs) and seeds."""
    lines = [f"| group | seeds | final {metric}: mean [95% CI] | final: IQM [95% CI] | "
             f"best: mean [95% CI] | best: IQM [95% CI] |",
             "|---|---|---|---|---|---|"]
    flagged = False
    for name, runs in groups.items():
        finals, bests = run_scores(runs, metric, final_points)
        seeds = f"{finals.size}"
        if finals.size < MIN_SEEDS:
            seeds += " ⚠"
            flagged = True
        lines.append(f"| {name} | {seeds} | {_cell(finals, mean)} | {_cell(finals, iqm)} | "
                     f"{_cell(bests, mean)} | {_cell(bests, iqm)} |")
    final_text = "last logged value" if final_points == 1 else (
        f"mean of the last {final_points} logged values")
    lines += ["", f"Final: {final_text} of each run. Best: largest logged value. IQM: mean of "
              "the middle 50% of seeds. CIs: 95% stratified bootstrap over seeds."]
    if flagged:
        lines.append(f"⚠ fewer than {MIN_SEEDS} seeds: the statistics of this group are not "
                     "reliable; add seeds with `repeat:`.")
    return "\n".join(lines)


def scores_at(runs: Sequence[Run], metric: str, budget: int, points: int = 1
              ) -> tuple[np.ndarray, np.ndarray]:
    """Each run's ``metric`` at ``budget`` env steps and the wall-clock it took to get there.

    The value is the mean of the ``points`` logged values ending at the first log at or past
    ``budget``; runs that never reached it are left out. Two ``[N]`` arrays.
    """
    values, seconds = [], []
    for run in runs:
        steps, series = run.series(metric, "env_steps")
        reached = np.flatnonzero(steps >= budget)
        if not reached.size:
            continue
        end = int(reached[0]) + 1
        values.append(series[max(0, end - points):end].mean())
        wall = [r.get("wall_time") for r in run.records
                if isinstance(r.get("env_steps"), (int, float)) and r["env_steps"] >= budget]
        seconds.append(float(wall[0]) if wall and isinstance(wall[0], (int, float)) else np.nan)
    return np.asarray(values), np.asarray(seconds)


def table_at(groups: dict[str, list[Run]], metric: str, budgets: Sequence[int],
             points: int = 1) -> str:
    """The Markdown table of every group at each budget: mean and IQM with 95% CIs."""
    lines = [f"| group | env steps | seeds | {metric}: mean [95% CI] | IQM [95% CI] | "
             "wall-clock to there (s, min-max) |", "|---|---|---|---|---|---|"]
    for name, runs in groups.items():
        for budget in budgets:
            values, seconds = scores_at(runs, metric, budget, points)
            wall = (f"{np.nanmin(seconds):.0f}-{np.nanmax(seconds):.0f}"
                    if values.size and np.isfinite(seconds).any() else "n/a")
            lines.append(f"| {name} | {budget:,} | {values.size} | {_cell(values, mean)} | "
                         f"{_cell(values, iqm)} | {wall} |")
    text = "the logged value" if points == 1 else f"the mean of the {points} logged values"
    lines += ["", f"At a budget: {text} ending at each run's first log at or past it."]
    return "\n".join(lines)


def marl_eval_data(groups: dict[str, list[Run]], metric: str, final_points: int = 1
                   ) -> dict[str, Any]:
    """Raw data in marl-eval's layout (github.com/instadeepai/marl-eval, README).

    ``{env: {task: {algorithm: {run_k: {step_k: {"step_count": int, metric: [value]},
    "absolute_metrics": {metric: [final]}}}}}}``: env and task split the task id at its
    first ``/`` (``mpe2`` / ``simple_spread_v3``), the algorithm is the group name, and
    each list holds the one value logged at that step (marl-eval expects one value per
    evaluation episode; training logs give one mean per log step).
    """
    data: dict[str, Any] = {}
    for name, runs in groups.items():
        for index, run in enumerate(runs):
            env, _, task = run.task.partition("/")
            steps, values = run.series(metric, "env_steps")
            if not values.size:
                continue
            entry = {f"step_{k}": {"step_count": int(step), metric: [float(value)]}
                     for k, (step, value) in enumerate(zip(steps, values, strict=True))}
            entry["absolute_metrics"] = {metric: [float(values[-final_points:].mean())]}
            algorithms = data.setdefault(env, {}).setdefault(task or env, {})
            algorithms.setdefault(name, {})[f"run_{index}"] = entry
    return data


def _check_metric(groups: dict[str, list[Run]], metric: str, root: Path) -> None:
    """Refuse a metric that no run logged, naming the ones they did."""
    logged = sorted({key for runs in groups.values() for run in runs for record in run.records
                     for key, value in record.items() if isinstance(value, (int, float))})
    if metric in logged:
        return
    close = difflib.get_close_matches(metric, logged, n=3, cutoff=0.5)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    shown = ", ".join(logged[:12]) + (", ..." if len(logged) > 12 else "")
    raise ConfigError(f"--metric {metric}: no run under {root} logged it; {hint}"
                      f"logged metrics: {shown or 'none (empty metrics.jsonl files)'}")


def write_report(root: Path, out: Path, metric: str = "episode_return",
                 xs: Sequence[str] = ("env_steps", "wall_time"), final_points: int = 1,
                 budgets: Sequence[int] = ()) -> str:
    """Write ``report.md``, ``curves_<metric>_<x>.png`` and ``marl_eval.json``; return the
    table (and, for each of ``budgets`` env steps, the groups' values there)."""
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a directory; pass the runs directory of a sweep "
                                "(for example runs/my_sweep)")
    if final_points < 1:
        raise ConfigError(f"--final-points: expected an integer >= 1, got {final_points}; "
                          "e.g. --final-points 1")
    groups = group_runs(find_runs(root))
    if not groups:
        raise FileNotFoundError(f"no runs under {root}: expected folders holding metrics.jsonl "
                                "and config.yaml")
    _check_metric(groups, metric, root)
    if any(budget < 1 for budget in budgets):
        raise ConfigError(f"--at: expected env-step budgets >= 1, got {list(budgets)}; "
                          "e.g. --at 200000")
    text = table(groups, metric, final_points)
    if budgets:
        text += "\n\n" + table_at(groups, metric, budgets, final_points)
    out.mkdir(parents=True, exist_ok=True)
    images = []
    for x in xs:
        path = out / f"curves_{metric.replace('/', '-')}_{x}.png"
        plot_curves(groups, metric, x, path)
        images.append(f"![{metric} against {x}]({path.name})")
    atomic_write_text(out / "report.md", f"# {metric} over {root}\n\n{text}\n\n"
                      + "\n".join(images) + "\n")
    data = marl_eval_data(groups, metric, final_points)
    atomic_write_text(out / "marl_eval.json", json.dumps(data, indent=1) + "\n")
    return text
