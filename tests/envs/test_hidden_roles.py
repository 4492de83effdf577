"""toy/hidden_roles (marl_envs.tasks.hidden_roles): conformance, rewards, hidden roles."""

from __future__ import annotations

import marl_envs
import numpy as np
import pytest
import torch
from marl_envs.tasks import HiddenRolesEnv
from marl_envs.tasks.hidden_roles import hidden_role_assignment
from pettingzoo.test import parallel_api_test


@pytest.mark.parametrize(
    "kwargs", [{}, {"num_agents": 4, "num_roles": 1}, {"num_agents": 5, "num_roles": 2}],
    ids=["default", "one_role", "unbalanced"],
)
def test_parallel_api(kwargs: dict) -> None:
    parallel_api_test(HiddenRolesEnv(**kwargs), num_cycles=100)


def test_roles_are_balanced_and_shuffled_by_the_seed() -> None:
    roles = hidden_role_assignment(7, 3, role_seed=0)
    assert sorted(np.bincount(roles).tolist()) == [2, 2, 3]
    layouts = {tuple(hidden_role_assignment(6, 3, seed)) for seed in range(10)}
    assert len(layouts) > 1, "the seed must change which agent holds which role"
    np.testing.assert_array_equal(hidden_role_assignment(6, 3, 4), hidden_role_assignment(6, 3, 4))


def test_rewards_by_hand_and_observations_identical() -> None:
    env = HiddenRolesEnv(num_agents=4, num_roles=2, num_actions=3, max_steps=2, role_seed=1)
    roles = env.roles.tolist()
    observations, _ = env.reset(seed=3)
    assert all(np.array_equal(obs, [0.0]) for obs in observations.values())
    # Step 1: everyone plays 0 -> exactly the role-0 agents earn 1.
    observations, rewards, terminations, truncations, _ = env.step(dict.fromkeys(env.agents, 0))
    assert [rewards[f"agent_{i}"] for i in range(4)] == [float(r == 0) for r in roles]
    assert all(np.array_equal(obs, [0.5]) for obs in observations.values())
    assert not any(terminations.values()) and not any(truncations.values())
    # Step 2: everyone plays its role -> all earn 1; action 2 (no role) never pays.
    actions = {f"agent_{i}": roles[i] for i in range(4)}
    _, rewards, terminations, truncations, _ = env.step(actions)
    assert set(rewards.values()) == {1.0}
    assert all(truncations.values()) and not any(terminations.values())
    assert env.agents == []


def test_shared_policy_without_ids_is_capped_at_the_largest_role_share() -> None:
    # Every agent playing the same action a earns n_a / N on average: 1/3 here.
    env = HiddenRolesEnv(num_agents=6, num_roles=3, max_steps=1)
    for action in range(3):
        env.reset()
        _, rewards, _, _, _ = env.step(dict.fromkeys(env.agents, action))
        assert np.mean(list(rewards.values())) == pytest.approx(1 / 3)


def test_registered_and_deterministic_under_a_seed() -> None:
    def returns(seed: int) -> torch.Tensor:
        env = marl_envs.make("toy/hidden_roles", num_envs=2, kwargs={"role_seed": seed})
        env.reset(seed=0)
        generator = torch.Generator().manual_seed(0)
        total = torch.zeros(2, 6)
        for _ in range(5):
            actions = torch.randint(3, (2, 6), generator=generator)
            total += env.step({"agent": actions}).groups["agent"].reward
        return total

    torch.testing.assert_close(returns(2), returns(2), rtol=0, atol=0)
    assert not torch.equal(returns(2), returns(5)), "role_seed must move the roles"


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="num_roles <= min"):
        HiddenRolesEnv(num_agents=2, num_roles=3)
    with pytest.raises(ValueError, match="num_roles <= min"):
        HiddenRolesEnv(num_roles=4, num_actions=3)
