"""Report statistics against hand computations, and the report files on synthetic runs."""

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from marl.cli import main
from marl.config import Config, to_dict
from marl.evaluate import bootstrap_ci
from marl.experiments.report import find_runs, group_runs, table
from marl.experiments.stats import iqm, mean, pointwise_ci, stratified_bootstrap_ci


def test_iqm_is_the_mean_of_the_middle_half() -> None:
    # 8 scores: drop the 2 lowest and the 2 highest, average the middle 4.
    scores = np.array([100.0, 1.0, 3.0, 5.0, 7.0, 2.0, -50.0, 4.0])
    assert iqm(scores) == pytest.approx((2 + 3 + 4 + 5) / 4)
    # 5 scores: floor(5 / 4) = 1 dropped at each end (scipy.stats.trim_mean(x, 0.25)).
    assert iqm(np.array([0.0, 10.0, 1.0, 2.0, 3.0])) == pytest.approx(2.0)
    assert iqm(np.array([1.0, 5.0])) == pytest.approx(3.0)  # under 4 scores: the mean
    assert iqm(np.array([[1.0, 2.0, 3.0, 10.0]])) == pytest.approx([2.5])  # last axis


def test_bootstrap_of_the_mean_matches_evaluate_bootstrap_ci() -> None:
    scores = [1.0, 4.0, 2.5, 8.0, 3.0]
    assert stratified_bootstrap_ci(scores, mean) == pytest.approx(bootstrap_ci(scores))


def test_intervals_contain_the_point_and_order_by_width() -> None:
    rng = np.random.default_rng(3)
    few, many = rng.normal(5.0, 2.0, 5), rng.normal(5.0, 2.0, 80)
    for scores in (few, many):
        for statistic in (mean, iqm):
            low, high = stratified_bootstrap_ci(scores, statistic)
            assert low <= float(statistic(scores)) <= high
    width = lambda interval: interval[1] - interval[0]  # noqa: E731
    assert width(stratified_bootstrap_ci(many)) < width(stratified_bootstrap_ci(few))
    assert (width(stratified_bootstrap_ci(few, confidence=0.5))
            < width(stratified_bootstrap_ci(few, confidence=0.95)))
    assert stratified_bootstrap_ci([2.0]) == (2.0, 2.0)


def test_pointwise_band_brackets_the_mean_curve() -> None:
    curves = np.array([[0.0, 1.0, 2.0], [1.0, 2.0, 4.0], [2.0, 3.0, 3.0]])
    center, low, high = pointwise_ci(curves)
    assert center == pytest.approx([1.0, 2.0, 3.0])
    assert np.all(low <= center) and np.all(center <= high)


def _fake_run(folder: Path, seed: int, returns: list[float], descriptor: str | None,
              sharing: str = "shared") -> None:
    folder.mkdir(parents=True)
    config = to_dict(Config())
    config["seed"], config["run"]["dir"] = seed, str(folder)
    config["groups"]["sharing"] = sharing
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    lines = [json.dumps({"env_steps": 100 * (k + 1), "wall_time": 0.5 * (k + 1) + seed,
                         "episode_return": value}) for k, value in enumerate(returns)]
    lines.insert(1, json.dumps({"env_steps": 150, "wall_time": 0.7, "episodes": 0}))
    (folder / "metrics.jsonl").write_text("\n".join(lines) + "\n{broken")
    if descriptor is not None:
        (folder / "run.json").write_text(json.dumps({"descriptor": descriptor, "seed": seed}))


@pytest.fixture
def runs_dir(tmp_path: Path) -> Path:
    root = tmp_path / "runs"
    for seed, last in enumerate([1.0, 2.0, 3.0, 10.0], start=1):
        _fake_run(root / "abc__lr=1" / f"seed_{seed}", seed, [0.0, 20.0, last], "abc__lr=1")
    for seed in (1, 2):  # no run.json: grouped by config minus seed and run dir
        _fake_run(root / "old" / f"s{seed}", seed, [-1.0, -float(seed)], None, "independent")
    return root


def test_grouping_and_table_against_hand_computation(runs_dir: Path) -> None:
    groups = group_runs(find_runs(runs_dir))
    assert sorted(len(runs) for runs in groups.values()) == [2, 4]
    fallback = next(name for name in groups if name != "abc__lr=1")
    assert "independent" in fallback
    text = table(groups, "episode_return")
    row = next(line for line in text.splitlines() if line.startswith("| abc__lr=1 "))
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert cells[1] == "4"  # seeds, not flagged
    assert cells[2].startswith("4 [")  # final mean (1 + 2 + 3 + 10) / 4
    assert cells[3].startswith("2.5 [")  # final IQM: mean of 2 and 3
    assert cells[4].startswith("20 [20, 20]")  # best: 20 in every seed
    other = next(line for line in text.splitlines() if line.startswith(f"| {fallback} "))
    assert "| 2 ⚠ |" in other and "fewer than 3 seeds" in text
    assert "| -1.5 [" in other  # final mean of -1 and -2
    mean_of_last_two = table(groups, "episode_return", final_points=2)
    assert "| 12 [" in mean_of_last_two.splitlines()[2]  # mean of 10.5, 11, 11.5, 15


def test_report_command_writes_table_curves_and_marl_eval_json(
        runs_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "report"
    assert main(["report", str(runs_dir), "--out", str(out)]) == 0
    assert "| abc__lr=1 | 4 |" in capsys.readouterr().out
    assert (out / "curves_episode_return_env_steps.png").stat().st_size > 1000
    assert (out / "curves_episode_return_wall_time.png").stat().st_size > 1000
    assert "| abc__lr=1 | 4 |" in (out / "report.md").read_text()
    data = json.loads((out / "marl_eval.json").read_text())
    runs = data["mpe2"]["simple_spread_v3"]["abc__lr=1"]
    assert sorted(runs) == ["run_0", "run_1", "run_2", "run_3"]
    assert runs["run_3"]["step_2"] == {"step_count": 300, "episode_return": [10.0]}
    assert runs["run_3"]["absolute_metrics"] == {"episode_return": [10.0]}
    assert main(["report", str(tmp_path / "missing")]) == 2



def test_values_at_a_budget_against_hand_computation(
        runs_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Runs log returns [0, 20, last] at 100, 200, 300 steps (and a line without a return
    at 150): at 150 steps each run's value is its first return at or past 150 (20), at 250
    steps its last one; runs that stop before a budget are left out of it."""
    from marl.experiments.report import scores_at

    groups = group_runs(find_runs(runs_dir))
    values, seconds = scores_at(groups["abc__lr=1"], "episode_return", 150)
    assert values.tolist() == [20.0, 20.0, 20.0, 20.0]
    assert seconds.tolist() == [0.7, 0.7, 0.7, 0.7]  # the 150-step line's wall_time
    assert scores_at(groups["abc__lr=1"], "episode_return", 250)[0].tolist() == [1, 2, 3, 10]
    assert scores_at(groups["abc__lr=1"], "episode_return", 301)[0].size == 0
    assert main(["report", str(runs_dir), "--out", str(tmp_path / "r"), "--at", "250"]) == 0
    text = capsys.readouterr().out
    assert "| abc__lr=1 | 250 | 4 | 4 [" in text and "| 250 | 2 | n/a |" not in text
    assert main(["report", str(runs_dir), "--at", "0"]) == 2
