"""TimeLimit and ActionRepeat (marl_envs.wrappers)."""

from __future__ import annotations

import marl_envs
import pytest
import torch
from marl_envs import ActionRepeat, TimeLimit
from marl_envs.tasks import EndlessEnv, GridNavEnv, LeaveEarlyEnv
from pettingzoo.test import parallel_api_test


def test_time_limit_truncates_every_agent_and_empties_the_agent_list() -> None:
    env = TimeLimit(EndlessEnv(num_agents=2, max_steps=100), max_episode_steps=3)
    for _ in range(2):  # the count restarts at every reset
        env.reset(seed=0)
        for step in range(1, 4):
            assert env.agents == ["agent_0", "agent_1"]
            _, rewards, terminations, truncations, _ = env.step(dict.fromkeys(env.agents, 0))
            assert rewards == {"agent_0": 1.0, "agent_1": 1.0}
            assert not any(terminations.values())
            assert all(truncations.values()) == (step == 3)
        assert env.agents == []


def test_time_limit_never_turns_a_termination_into_a_truncation() -> None:
    env = TimeLimit(LeaveEarlyEnv(num_agents=3), max_episode_steps=2)
    env.reset(seed=0)
    env.step(dict.fromkeys(env.agents, 0))
    _, rewards, terminations, truncations, _ = env.step(dict.fromkeys(env.agents, 0))
    assert terminations == {"agent_1": True, "agent_2": False}
    assert truncations == {"agent_1": False, "agent_2": True}
    assert rewards == {"agent_1": 2.0, "agent_2": 0.1}


def test_time_limit_truncates_an_agent_that_entered_in_the_last_step() -> None:
    env = TimeLimit(LeaveEarlyEnv(num_agents=3, late_agent=True), max_episode_steps=2)
    env.reset(seed=0)
    env.step(dict.fromkeys(env.agents, 0))
    _, rewards, terminations, truncations, _ = env.step(dict.fromkeys(env.agents, 0))
    assert truncations == {"agent_1": False, "agent_2": True, "late_0": True}
    assert terminations == {"agent_1": True, "agent_2": False, "late_0": False}
    assert rewards["late_0"] == 0.0 and env.agents == []


def test_time_limit_does_not_edit_the_wrapped_envs_dicts() -> None:
    inner = EndlessEnv(max_steps=100)
    env = TimeLimit(inner, max_episode_steps=1)
    env.reset(seed=0)
    _, _, _, truncations, _ = env.step(dict.fromkeys(env.agents, 0))
    assert all(truncations.values())
    assert inner.agents == ["agent_0", "agent_1"]  # the inner env did not end


def test_time_limit_passes_state_and_spaces_through() -> None:
    env = TimeLimit(EndlessEnv(), max_episode_steps=2)
    env.reset(seed=0)
    assert env.state().shape == (8,)
    assert env.action_space("agent_0").n == 2
    assert env.possible_agents == ["agent_0", "agent_1"]


@pytest.mark.parametrize("bad", [0, -3, 2.5])
def test_time_limit_rejects_non_positive_limits(bad: object) -> None:
    with pytest.raises(ValueError, match="max_episode_steps must be a positive int"):
        TimeLimit(EndlessEnv(), max_episode_steps=bad)


def test_action_repeat_sums_rewards_and_stops_at_the_truncation() -> None:
    env = ActionRepeat(EndlessEnv(num_agents=2, max_steps=5), num_repeats=2)
    env.reset(seed=0)
    decisions = []
    while env.agents:
        _, rewards, terminations, truncations, _ = env.step(dict.fromkeys(env.agents, 0))
        decisions.append((rewards["agent_0"], truncations["agent_0"]))
        assert not any(terminations.values())
    assert decisions == [(2.0, False), (2.0, False), (1.0, True)]


def test_action_repeat_stops_when_an_agent_terminates_or_enters() -> None:
    env = ActionRepeat(LeaveEarlyEnv(num_agents=4, late_agent=True), num_repeats=3)
    observations, _ = env.reset(seed=0)
    # Step 1: agent_0 leaves, so the decision ends after one env step.
    observations, rewards, terminations, _, _ = env.step(dict.fromkeys(env.agents, 0))
    assert rewards == {"agent_0": 1.0, "agent_1": 0.1, "agent_2": 0.1, "agent_3": 0.1}
    assert terminations["agent_0"] and not terminations["agent_1"]
    assert observations["agent_1"][0] == 1.0  # the observation of env step 1
    # Step 2: agent_1 leaves and late_0 enters; both are reported at this decision.
    observations, rewards, terminations, _, _ = env.step(dict.fromkeys(env.agents, 0))
    assert rewards == {"agent_1": 2.0, "agent_2": 0.1, "agent_3": 0.1, "late_0": 0.0}
    assert "late_0" in env.agents and observations["late_0"][0] == 2.0


def test_action_repeat_over_a_time_limit_counts_env_steps() -> None:
    env = ActionRepeat(TimeLimit(EndlessEnv(max_steps=100), max_episode_steps=3), num_repeats=2)
    env.reset(seed=0)
    _, rewards, _, truncations, _ = env.step(dict.fromkeys(env.agents, 0))
    assert rewards["agent_0"] == 2.0 and not truncations["agent_0"]
    _, rewards, terminations, truncations, _ = env.step(dict.fromkeys(env.agents, 0))
    assert rewards["agent_0"] == 1.0 and truncations["agent_0"] and not terminations["agent_0"]
    assert env.agents == []


def test_action_repeat_passes_the_parallel_api_test() -> None:
    parallel_api_test(ActionRepeat(GridNavEnv(size=4, max_steps=9), num_repeats=2),
                      num_cycles=50)


def test_make_applies_action_repeat_to_every_copy() -> None:
    env = marl_envs.make("toy/endless", num_envs=2, kwargs={"max_steps": 7}, action_repeat=3)
    env.reset(seed=0)
    actions = {"agent": torch.zeros(2, 2, dtype=torch.int64)}
    rewards = [float(env.step(actions).groups["agent"].reward[0, 0]) for _ in range(3)]
    assert rewards == [3.0, 3.0, 1.0]


@pytest.mark.parametrize("bad", [0, -2, 1.5, True])
def test_action_repeat_rejects_bad_counts(bad: object) -> None:
    with pytest.raises(ValueError, match="action_repeat must be a positive int"):
        ActionRepeat(EndlessEnv(), num_repeats=bad)  # type: ignore[arg-type]
