"""Actions cross the env boundary in the env's own range: ``Discrete(n, start=s)`` agents
get ``s .. s + n - 1`` from every learner, in training and in evaluation."""

import json
from pathlib import Path

import pytest
from toy_factories import RECEIVED

from marl.cli import main
from marl.config import load
from marl.evaluate import evaluate
from marl.trainer import RunResult, train


def _received(agent: str) -> set[int]:
    return {action for name, action in RECEIVED if name == agent}


@pytest.mark.parametrize("algo,start", [("ippo", 5), ("ippo", -1), ("iql", 5), ("vdn", -1)])
def test_every_learner_sends_actions_in_the_spaces_own_range(tmp_path: Path, algo: str,
                                                            start: int) -> None:
    overrides = {"algo.name": algo, "env.task": "toy_factories:offset_actions",
                 "env.kwargs.start": str(start), "env.num_envs": "2", "algo.num_steps": "8",
                 "groups.hidden": "[8]", "train.total_env_steps": "128",
                 "train.log_every": "64", "train.checkpoint_every": "128",
                 "run.dir": str(tmp_path / "run"), "run.tensorboard": "false",
                 "train.progress": "false", "torch_threads": "1"}
    if algo != "ippo":
        overrides.update({"algo.warmup_steps": "32", "algo.batch_size": "8",
                          "algo.buffer_size": "64"})
    RECEIVED.clear()
    result = train(load(overrides=overrides))
    allowed = set(range(start, start + 3))
    # Every action of the space was used, and none outside it (the env raises on those);
    # agent_1's masked first action never arrives.
    assert _received("agent_0") == allowed
    assert _received("agent_1") == allowed - {start}
    RECEIVED.clear()
    report = evaluate(result.run_dir, episodes=4)
    assert report["episodes"] == 4
    assert _received("agent_0") <= allowed and _received("agent_1") <= allowed - {start}
    assert len(RECEIVED) == 4 * 4 * 2  # 4 episodes of 4 steps, 2 agents


def _train_offset(tmp_path: Path, steps: int) -> RunResult:
    """A tiny IPPO run on ``offset_actions`` (actions ``7..9``) in ``tmp_path / "run"``."""
    overrides = {"env.task": "toy_factories:offset_actions", "env.kwargs.start": "7",
                 "env.num_envs": "2", "algo.num_steps": "8", "groups.hidden": "[8]",
                 "train.total_env_steps": str(steps), "run.dir": str(tmp_path / "run"),
                 "run.tensorboard": "false", "train.progress": "false", "torch_threads": "1"}
    return train(load(overrides=overrides))


def test_marl_eval_sends_actions_in_the_spaces_own_range(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    result = _train_offset(tmp_path, 32)
    RECEIVED.clear()
    capsys.readouterr()
    assert main(["eval", str(result.run_dir), "--episodes", "2", "--greedy"]) == 0
    assert json.loads(capsys.readouterr().out)["episodes"] == 2
    assert RECEIVED and {a for _, a in RECEIVED} <= {7, 8, 9}


def test_random_play_sends_every_allowed_action_and_no_masked_one(tmp_path: Path) -> None:
    result = _train_offset(tmp_path, 16)
    RECEIVED.clear()
    report = evaluate(result.run_dir, episodes=20, random_play=True)
    assert report["policy"] == "random" and report["episodes"] == 20
    # 80 draws per agent: every allowed action turns up, agent_1's masked one never.
    assert _received("agent_0") == {7, 8, 9}
    assert _received("agent_1") == {8, 9}
