"""TimeLimit (marl_envs.wrappers)."""

from __future__ import annotations

import pytest
from marl_envs import TimeLimit
from marl_envs.tasks import EndlessEnv, LeaveEarlyEnv


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
