"""toy/memory (marl_envs.tasks.memory): the cue, the query, the returns its docstring states."""

from __future__ import annotations

from collections.abc import Callable

import marl_envs
import numpy as np
import pytest
import torch
from marl_envs.tasks import MemoryEnv
from pettingzoo.test import parallel_api_test

Policy = Callable[[int, str, np.ndarray], int]
"""``(time, agent, observation) -> action``; memory, if any, lives in a closure."""


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"delay": 0}, {"num_agents": 3, "num_cues": 2, "shared_cue": True, "team_reward": True}],
    ids=["default", "no_delay", "shared_team"],
)
def test_parallel_api(kwargs: dict) -> None:
    parallel_api_test(MemoryEnv(**kwargs), num_cycles=100)


def _episode(env: MemoryEnv, policy: Policy, seed: int | None = None) -> dict:
    """Play one episode; return its observations, per-agent returns and the cues."""
    observations, _ = env.reset(seed=seed)
    cues = env.cues.copy()
    trace, returns, time = [observations], dict.fromkeys(env.possible_agents, 0.0), 0
    while env.agents:
        actions = {agent: policy(time, agent, observations[agent]) for agent in env.agents}
        observations, rewards, terminations, truncations, _ = env.step(actions)
        time += 1
        assert not any(truncations.values())
        assert all(terminations.values()) == (not env.agents)
        for agent, reward in rewards.items():
            assert reward == 0.0 or env.agents == [], "only the query step pays"
            returns[agent] += reward
        trace.append(observations)
    return {"observations": trace[:-1], "returns": returns, "cues": cues, "length": time}


def remembering() -> Policy:
    """The optimum: store the cue seen at time 0, name it at the query."""
    memory: dict[str, int] = {}

    def policy(time: int, agent: str, observation: np.ndarray) -> int:
        if time == 0:
            memory[agent] = int(np.argmax(observation[:-1]))
        return memory[agent]

    return policy


@pytest.mark.parametrize("delay", [0, 1, 5])
def test_cue_only_at_the_first_step_and_episodes_last_delay_plus_two(delay: int) -> None:
    env = MemoryEnv(num_agents=3, num_cues=4, delay=delay)
    played = _episode(env, lambda time, agent, obs: 0, seed=1)
    assert played["length"] == delay + 2
    for time, observations in enumerate(played["observations"]):
        for index, agent in enumerate(env.possible_agents):
            cue_part, flag = observations[agent][:-1], observations[agent][-1]
            expected = np.eye(4)[played["cues"][index]] if time == 0 else np.zeros(4)
            np.testing.assert_array_equal(cue_part, expected)
            assert flag == (1.0 if time == delay + 1 else 0.0)


@pytest.mark.parametrize("team_reward", [False, True])
def test_remembering_policy_earns_the_maximum(team_reward: bool) -> None:
    env = MemoryEnv(num_agents=2, num_cues=5, delay=3, team_reward=team_reward)
    for seed in range(20):
        assert _episode(env, remembering(), seed)["returns"] == {"agent_0": 1.0, "agent_1": 1.0}


def test_individual_and_team_rewards_by_hand() -> None:
    for team_reward, expected in ((False, [1.0, 0.0]), (True, [0.5, 0.5])):
        remember = remembering()

        def wrong_for_agent_1(time: int, agent: str, obs: np.ndarray, remember=remember) -> int:
            answer = remember(time, agent, obs)
            return (answer + 1) % 3 if agent == "agent_1" else answer

        env = MemoryEnv(num_agents=2, num_cues=3, delay=2, team_reward=team_reward)
        returns = _episode(env, wrong_for_agent_1, seed=0)["returns"]
        assert list(returns.values()) == expected


def test_memoryless_policies_stay_at_chance() -> None:
    env = MemoryEnv(num_agents=2, num_cues=4, delay=2)
    # The query observation carries no cue: it is the same in every episode ...
    queries = {tuple(_episode(env, remembering(), seed)["observations"][-1]["agent_0"])
               for seed in range(30)}
    assert queries == {(0.0, 0.0, 0.0, 0.0, 1.0)}
    # ... so a memoryless answer is a fixed distribution over actions; against uniform cues
    # each fixed answer, hence every mixture of them, is right a quarter of the time.
    env.reset(seed=0)
    for answer in range(4):
        def constant(time: int, agent: str, obs: np.ndarray, answer: int = answer) -> int:
            return answer

        returns = [_episode(env, constant)["returns"]["agent_0"] for _ in range(2000)]
        assert np.mean(returns) == pytest.approx(0.25, abs=0.03)


def test_shared_cue_is_one_cue_for_all_agents() -> None:
    def distinct_cues(env: MemoryEnv, seed: int) -> int:
        env.reset(seed=seed)
        return len(set(env.cues.tolist()))

    shared = MemoryEnv(num_agents=4, num_cues=6, shared_cue=True)
    own = MemoryEnv(num_agents=4, num_cues=6)
    assert {distinct_cues(shared, seed) for seed in range(10)} == {1}
    assert max(distinct_cues(own, seed) for seed in range(10)) > 1


def test_seeding_is_deterministic() -> None:
    def cues(seed: int, episodes: int = 5) -> list[list[int]]:
        env = MemoryEnv(num_agents=2, num_cues=4)
        drawn = [_episode(env, remembering(), seed)["cues"].tolist()]
        drawn += [_episode(env, remembering())["cues"].tolist() for _ in range(episodes - 1)]
        return drawn

    assert cues(3) == cues(3)
    assert cues(3) != cues(4)


def test_state_holds_every_cue_and_the_time() -> None:
    env = MemoryEnv(num_agents=2, num_cues=3, delay=1)
    env.reset(seed=0)
    cues = np.eye(3)[env.cues].reshape(-1)
    np.testing.assert_array_equal(env.state(), [*cues, 0.0])
    env.step(dict.fromkeys(env.agents, 0))
    np.testing.assert_array_equal(env.state(), [*cues, 0.5])


def test_made_through_the_registry_as_a_batched_env() -> None:
    env = marl_envs.make("toy/memory", num_envs=3, kwargs={"num_cues": 3, "delay": 1})
    reset = env.reset(seed=0).groups["agent"]
    assert reset.obs.shape == (3, 2, 4)
    first_cues = reset.obs[..., :3].argmax(-1)
    for time in range(3):  # cue, blank, query
        step = env.step({"agent": first_cues}).groups["agent"]
        assert step.terminated.all() == (time == 2)
        assert not step.truncated.any()
        expected_reward = torch.ones(3, 2) if time == 2 else torch.zeros(3, 2)
        torch.testing.assert_close(step.reward, expected_reward)
    # Auto-reset: the next observation is a new episode's cue.
    assert torch.equal(step.next.obs[..., :3].sum(-1), torch.ones(3, 2))


@pytest.mark.parametrize(
    "kwargs", [{"num_agents": 0}, {"num_cues": 1}, {"delay": -1}]
)
def test_bad_sizes_are_refused(kwargs: dict) -> None:
    with pytest.raises(ValueError, match=r"need num_agents >= 1, num_cues >= 2 and delay >= 0"):
        MemoryEnv(**kwargs)
