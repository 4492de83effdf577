"""Our own toy tasks (marl_envs.tasks): PettingZoo conformance and their promises."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from marl_envs import TimeLimit
from marl_envs.tasks import CoopMatchEnv, EndlessEnv, LeaveEarlyEnv
from pettingzoo import ParallelEnv
from pettingzoo.test import parallel_api_test


@pytest.mark.parametrize(
    "env_fn",
    [
        EndlessEnv,
        CoopMatchEnv,
        LeaveEarlyEnv,
        lambda: LeaveEarlyEnv(late_agent=True),
        lambda: CoopMatchEnv(num_agents=4, num_cues=5),
        lambda: TimeLimit(LeaveEarlyEnv(num_agents=4), max_episode_steps=2),
    ],
    ids=["endless", "coop_match", "leave_early", "leave_early_late", "coop_4x5", "time_limit"],
)
def test_parallel_api(env_fn: Callable[[], ParallelEnv]) -> None:
    parallel_api_test(env_fn(), num_cycles=100)


def test_endless_pays_one_every_step_and_only_truncates() -> None:
    env = EndlessEnv(num_agents=3, max_steps=6)
    observations, _ = env.reset(seed=0)
    first = observations["agent_0"]
    for step in range(1, 7):
        observations, rewards, terminations, truncations, _ = env.step(dict.fromkeys(env.agents, 1))
        assert set(rewards.values()) == {1.0}
        assert not any(terminations.values())
        assert all(truncations.values()) == (step == 6)
        np.testing.assert_array_equal(observations["agent_2"], first)
    assert env.agents == []
    assert env.state().shape == (12,)


def _play(env: CoopMatchEnv, policy: Callable[[int, int], int], steps: int) -> list[float]:
    rewards: list[float] = []
    observations, _ = env.reset(seed=0)
    while len(rewards) < steps:
        actions = {
            agent: policy(int(np.argmax(observations[agent])), index)
            for index, agent in enumerate(env.agents)
        }
        observations, reward, _, truncations, _ = env.step(actions)
        rewards.append(reward["agent_0"])
        assert len(set(reward.values())) == 1, "the team reward is shared"
        if all(truncations.values()):
            observations, _ = env.reset()
    return rewards


def test_coop_match_rewards_optimal_random_and_identity_blind_policies() -> None:
    env = CoopMatchEnv(num_agents=2, num_cues=3)
    optimal = _play(env, lambda cue, index: (cue + index) % 3, steps=50)
    assert optimal == [1.0] * 50
    blind = _play(env, lambda cue, index: cue, steps=50)  # ignores its agent index
    assert blind == [0.5] * 50
    rng = np.random.default_rng(0)
    random = _play(env, lambda cue, index: int(rng.integers(3)), steps=3000)
    assert np.mean(random) == pytest.approx(1 / 3, abs=0.03)


def test_coop_match_is_seeded_and_truncates_at_max_steps() -> None:
    def cues(seed: int) -> list[list[float]]:
        env = CoopMatchEnv(max_steps=3)
        observations, _ = env.reset(seed=seed)
        trace = [observations["agent_1"].tolist()]
        for step in range(1, 4):
            observations, _, terminations, truncations, _ = env.step(dict.fromkeys(env.agents, 0))
            trace.append(observations["agent_1"].tolist())
            assert all(truncations.values()) == (step == 3) and not any(terminations.values())
        return trace

    assert cues(1) == cues(1)
    assert cues(1) != cues(2)


def test_leave_early_schedule() -> None:
    env = LeaveEarlyEnv(num_agents=3)
    env.reset(seed=0)
    for step in range(1, 4):
        acting = list(env.agents)
        _, rewards, terminations, _, _ = env.step(dict.fromkeys(acting, 0))
        leaving = f"agent_{step - 1}"
        assert [agent for agent in acting if terminations[agent]] == [leaving]
        assert rewards[leaving] == step
        assert all(rewards[agent] == 0.1 for agent in acting if agent != leaving)
        assert leaving not in env.agents
    assert env.agents == []
