"""Short learning runs on a tiny cooperative task: thresholds a broken learner misses."""

from pathlib import Path

import pytest

from marl.config import load
from marl.evaluate import evaluate
from marl.trainer import train

# toy/coop_match, 2 agents, 3 cues, 5 steps: agent i must answer (cue + i) % 3. Random play
# scores 5/3 per episode; a shared network without agent IDs cannot tell the agents apart
# and tops out at 2.5 (one of the two right); the optimum is 5.


def _train(tmp_path: Path, name: str, **overrides: str) -> float:
    base = {"hpset": "ippo_tiny", "train.total_env_steps": "10000", "run.dir": str(tmp_path / name),
            "run.tensorboard": "false", "train.progress": "false"}
    result = train(load(overrides={**base, **overrides}))
    return float(evaluate(result.run_dir, episodes=40, greedy=True)["episode_return_mean"])


def test_shared_network_with_agent_ids_learns_coop_match(tmp_path: Path) -> None:
    assert _train(tmp_path, "shared") >= 4.0


def test_without_agent_ids_a_shared_network_cannot_specialise(tmp_path: Path) -> None:
    assert _train(tmp_path, "no_ids", **{"groups.agent_id": "false"}) <= 3.0


def test_independent_networks_learn_coop_match(tmp_path: Path) -> None:
    assert _train(tmp_path, "independent", **{"groups.sharing": "independent"}) >= 4.0


@pytest.mark.slow
def test_ippo_shared_improves_on_simple_spread(tmp_path: Path) -> None:
    """About 2 minutes: 150k env steps lift the per-agent return well above random (-27.1)."""
    result = train(load(overrides={"train.total_env_steps": "150000", "train.progress": "false",
                                   "run.dir": str(tmp_path / "spread"),
                                   "run.tensorboard": "false"}))
    assert result.last_metrics["episode_return"] > -23.0


def _train_off_policy(tmp_path: Path, name: str, task: str, steps: int,
                      **overrides: str) -> float:
    base = {"algo.name": name, "env.task": task, "env.num_envs": "8", "algo.num_steps": "2",
            "algo.warmup_steps": "500", "algo.batch_size": "64",
            "algo.eps_anneal_steps": str(steps // 2), "optim.lr": "2e-3",
            "optim.max_grad_norm": "10", "groups.activation": "relu",
            "train.total_env_steps": str(steps), "train.log_every": str(steps),
            "train.checkpoint_every": str(steps), "run.dir": str(tmp_path / name),
            "run.tensorboard": "false", "train.progress": "false"}
    result = train(load(overrides={**base, **overrides}))
    return float(evaluate(result.run_dir, episodes=40)["episode_return_mean"])


@pytest.mark.parametrize("name", ["iql", "vdn", "qmix"])
def test_q_learners_learn_coop_match(tmp_path: Path, name: str) -> None:
    """Random play scores 5/3 per episode, the optimum 5 (greedy evaluation)."""
    assert _train_off_policy(tmp_path, name, "toy/coop_match", 6000) >= 4.0


@pytest.mark.parametrize("name", ["maddpg", "matd3"])
def test_deterministic_actors_learn_reach(tmp_path: Path, name: str) -> None:
    """toy/reach: uniform actions score -4/3 per agent, the optimum 0."""
    assert _train_off_policy(tmp_path, name, "toy/reach", 6000) >= -0.15
