"""Evaluation episodes: the one player behind `marl eval` and evaluation during training."""

import json
import random
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from marl.algos.ppo import PPO
from marl.build import build_env, make_evaluator, make_learner
from marl.cli import main
from marl.config import ConfigError, apply, load
from marl.evaluate import evaluate
from marl.experiments.report import write_report
from marl.logging import _tag
from marl.play import Evaluator, play_episodes
from marl.trainer import train

sys.path.insert(0, str(Path(__file__).parent / "envs"))
from scripted_batched import ScriptedBatchedEnv

CPU = torch.device("cpu")


def _tiny(tmp_path: Path, name: str, **overrides: str) -> dict[str, str]:
    base = {"hpset": "ippo_tiny", "train.total_env_steps": "2048", "train.log_every": "512",
            "train.checkpoint_every": "1024", "train.eval_every": "256",
            "train.eval_episodes": "6", "run.dir": str(tmp_path / name),
            "run.tensorboard": "false", "train.progress": "false", "torch_threads": "1"}
    base.update(overrides)
    return base


def _rows(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _training_part(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items()
            if not k.startswith("eval_") and k not in ("wall_time", "sps")}


@pytest.mark.parametrize("mode", ["sample", "mode"])
def test_evaluation_leaves_training_exactly_as_without_it(tmp_path: Path, mode: str) -> None:
    with_eval = _rows(train(load(overrides=_tiny(tmp_path, "on", **{
        "train.eval_mode": mode}))).run_dir)
    without = _rows(train(load(overrides=_tiny(tmp_path, "off", **{
        "train.eval_every": "0"}))).run_dir)
    logged = [row for row in with_eval if "sps" in row]
    assert [_training_part(row) for row in logged] == [_training_part(row) for row in without]
    assert not any(key.startswith("eval_") for row in without for key in row)
    # Every 256 steps an evaluation; between log steps it has a line of its own.
    assert [row["env_steps"] for row in with_eval] == list(range(256, 2049, 256))
    for row in with_eval:
        assert row["eval_return_ci_low"] <= row["eval_return"] <= row["eval_return_ci_high"]
        assert row["eval_return/agent"] == row["eval_return"]  # one group
        assert row["eval_episode_length"] == 5.0 and row["eval_time"] > 0
        assert ("episode_return" in row) == (row["env_steps"] % 512 == 0)


def test_the_final_step_is_evaluated_and_tagged_under_eval(tmp_path: Path) -> None:
    # 2,000 is no multiple of the 128 steps of an iteration: the run ends at 2,048.
    rows = _rows(train(load(overrides=_tiny(tmp_path, "final", **{
        "train.eval_every": "100000", "train.total_env_steps": "2000"}))).run_dir)
    assert [row["env_steps"] for row in rows if "eval_return" in row] == [2048]
    assert _tag("eval_return") == "eval/return"
    assert _tag("eval_return/agent") == "eval/return/agent"
    assert _tag("episode_return") == "charts/episode_return"


def _algo_and_env(tmp_path: Path, num_envs: int) -> tuple[Any, Any]:
    config = apply(load(overrides=_tiny(tmp_path, "x")), {"env.num_envs": num_envs})
    env = build_env(config, CPU)
    return make_learner(env, config, CPU), env


def test_each_copy_counts_a_number_of_episodes_fixed_in_advance() -> None:
    # Copy 0's episodes last 1 step, copy 1's 4; the reward at step t is t, so an episode
    # of n steps returns n (n + 1) / 2. Six episodes: three of each copy, not the first
    # six to finish (which would be five of copy 0's and one of copy 1's).
    env = ScriptedBatchedEnv(lengths=[1, 4])
    algo = PPO(env, load(), CPU)
    result = play_episodes(algo, env, episodes=6, seed=0)
    assert sorted(result.returns) == [1.0, 1.0, 1.0, 10.0, 10.0, 10.0]
    assert sorted(result.lengths) == [1.0, 1.0, 1.0, 4.0, 4.0, 4.0]
    odd = play_episodes(algo, env, episodes=3, seed=0)
    assert sorted(odd.returns) == [1.0, 1.0, 10.0]  # copy 0 takes the extra episode


def test_episodes_are_reproducible_and_the_callers_rng_is_untouched(
        tmp_path: Path) -> None:
    algo, env = _algo_and_env(tmp_path, num_envs=4)
    torch.manual_seed(7)
    np.random.seed(7)
    random.seed(7)
    states = (torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate())
    first = play_episodes(algo, env, episodes=6, seed=3, sample=True)
    again = play_episodes(algo, env, episodes=6, seed=3, sample=True)
    other = play_episodes(algo, env, episodes=6, seed=4, sample=True)
    assert torch.equal(torch.get_rng_state(), states[0])
    assert (np.random.get_state()[1] == states[1]).all() and random.getstate() == states[2]
    assert len(first.returns) == 6 and first.returns == again.returns
    assert first.returns != other.returns
    assert first.group_returns["agent"] == first.returns and first.lengths == [5.0] * 6
    summary = Evaluator(env, 6, 3, "sample")(algo)
    assert summary["eval_return"] == pytest.approx(float(np.mean(first.returns)))
    env.close()


def test_report_reads_eval_return_from_runs_with_eval_lines(tmp_path: Path) -> None:
    run_dir = train(load(overrides=_tiny(tmp_path / "runs", "a"))).run_dir
    last = [row for row in _rows(run_dir) if "eval_return" in row][-1]["eval_return"]
    table = write_report(tmp_path / "runs", tmp_path / "report", "eval_return", ("env_steps",))
    assert f"| {last:.4g} [{last:.4g}, {last:.4g}] |" in table
    assert (tmp_path / "report" / "curves_eval_return_env_steps.png").is_file()
    assert main(["report", str(tmp_path / "runs"), "--metric", "eval_return",
                 "--x", "env_steps"]) == 0


@pytest.mark.parametrize("key,value,message", [
    ("train.eval_mode", "greedy", "expected one of mode, sample"),
    ("train.eval_episodes", "0", "expected an integer >= 1"),
    ("train.eval_every", "-1", "expected an integer >= 0"),
    ("train.replay_checkpoint_mb", "-5", "expected a number >= 0"),
])
def test_bad_eval_and_replay_keys_are_refused(key: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load(overrides={key: value})


def test_evaluation_plays_in_process_copies_of_a_subprocess_run(tmp_path: Path) -> None:
    overrides = _tiny(tmp_path, "sub", **{"env.vector": "subprocess", "env.num_workers": "2",
                                          "train.eval_episodes": "3"})
    evaluator = make_evaluator(load(overrides=overrides), CPU)
    assert evaluator is not None and evaluator.env.num_envs == 3
    evaluator.close()
    run_dir = train(load(overrides={**overrides, "train.total_env_steps": "256"})).run_dir
    assert evaluate(run_dir, episodes=4)["episodes"] == 4
