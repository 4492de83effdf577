"""SyncVectorEnv against PettingZoo envs stepped by hand, and its contract."""

from __future__ import annotations

import marl_envs
import numpy as np
import pytest
import torch
from hand_stepping import HandStepped, assert_reset_matches, assert_step_matches, draw_actions
from marl_envs import ActionError, SyncVectorEnv, TaskFactory
from tiny_parallel_envs import VanishingEnv, hetero_env

SPREAD = "mpe2/simple_spread_v3"


@pytest.mark.parametrize(
    ("task", "kwargs", "num_steps"),
    [
        (SPREAD, {}, 60),  # crosses the 25-step truncation twice
        (SPREAD, {"continuous_actions": True}, 30),  # Box actions
        ("toy/leave_early", {"late_agent": True}, 10),
        ("toy/leave_early", {"num_agents": 2, "late_agent": True}, 10),
        ("toy/coop_match", {"num_agents": 3}, 12),
    ],
)
def test_matches_pettingzoo_stepped_by_hand(task: str, kwargs: dict, num_steps: int) -> None:
    num_envs, seed = 3, 7
    factory = TaskFactory(task, kwargs)
    reference = HandStepped(factory, num_envs, seed)
    rng = np.random.default_rng(0)
    with SyncVectorEnv(factory, num_envs) as env:
        assert_reset_matches(env.reset(seed=seed), env.groups, reference.first)
        done_seen = False
        for _ in range(num_steps):
            actions, per_copy = draw_actions(env.groups, num_envs, rng)
            records = reference.step(per_copy)
            step = env.step(actions)
            assert_step_matches(step, env.groups, records)
            done_seen |= bool(step.env_done.any())
        assert done_seen, "the rollout should include an auto-reset"


def test_agents_leaving_early_keep_final_reward_and_slot() -> None:
    env = marl_envs.make("toy/leave_early", num_envs=1, kwargs={"late_agent": True})
    reset = env.reset(seed=0)
    assert list(env.groups) == ["agent", "late"]
    assert reset.groups["agent"].alive.tolist() == [[True, True, True]]
    assert reset.groups["late"].alive.tolist() == [[False]]  # not entered yet
    assert reset.groups["late"].obs.abs().sum() == 0
    actions = {
        "agent": torch.zeros(1, 3, dtype=torch.int64),
        "late": torch.zeros(1, 1, dtype=torch.int64),
    }

    first = env.step(actions)
    agent = first.groups["agent"]
    assert agent.reward[0].tolist() == pytest.approx([1.0, 0.1, 0.1])
    assert agent.terminated.tolist() == [[True, False, False]]
    assert not agent.truncated.any()
    assert agent.next.alive.tolist() == [[False, True, True]]
    assert agent.final_obs[0, 0].tolist() == [1.0, 0.0, 1.0]  # its last observation
    assert agent.next.obs[0, 0].tolist() == [0.0, 0.0, 0.0]  # zero once it has left

    second = env.step(actions)
    agent, late = second.groups["agent"], second.groups["late"]
    assert agent.reward[0].tolist() == pytest.approx([0.0, 2.0, 0.1])
    assert agent.terminated.tolist() == [[False, True, False]]
    assert late.reward.tolist() == [[0.0]]  # entering is not a transition of late_0
    assert late.next.alive.tolist() == [[True]]
    assert late.next.obs[0, 0].tolist() == [2.0, 3.0, 1.0]

    # Step 3: the last agents leave, env.agents empties; their rewards must survive.
    third = env.step(actions)
    agent, late = third.groups["agent"], third.groups["late"]
    assert third.env_done.tolist() == [True]
    assert agent.reward[0].tolist() == pytest.approx([0.0, 0.0, 3.0])
    assert late.reward[0].tolist() == pytest.approx([0.5])
    assert agent.terminated.tolist() == [[False, False, True]]
    assert late.terminated.tolist() == [[True]]
    assert agent.final_obs[0, 2].tolist() == [3.0, 2.0, 1.0]
    assert agent.next.alive.tolist() == [[True, True, True]]  # auto-reset
    assert late.next.alive.tolist() == [[False]]
    assert agent.next.obs[0, :, 0].tolist() == [0.0, 0.0, 0.0]  # step counter restarted
    assert third.final_state is not None and third.state is not None
    assert third.final_state[0, 0] == 3.0 and third.state[0, 0] == 0.0
    env.close()


def test_final_obs_equals_next_obs_where_nothing_reset() -> None:
    env = marl_envs.make(SPREAD, num_envs=2, max_episode_steps=3)
    env.reset(seed=0)
    actions = {"agent": torch.zeros(2, 3, dtype=torch.int64)}
    for _ in range(2):
        step = env.step(actions)
        assert not step.env_done.any()
        assert torch.equal(step.groups["agent"].final_obs, step.groups["agent"].next.obs)
        assert step.state is not None and step.final_state is not None
        assert torch.equal(step.state, step.final_state)
    last = env.step(actions)
    assert last.env_done.all()
    assert not torch.equal(last.groups["agent"].final_obs, last.groups["agent"].next.obs)
    env.close()


def test_time_limit_gives_truncated_not_terminated() -> None:
    env = marl_envs.make(SPREAD, num_envs=2, max_episode_steps=4)
    env.reset(seed=0)
    actions = {"agent": torch.ones(2, 3, dtype=torch.int64)}
    steps = [env.step(actions) for _ in range(4)]
    assert [step.env_done.tolist() for step in steps] == [[False, False]] * 3 + [[True, True]]
    assert steps[-1].groups["agent"].truncated.all()
    assert not any(step.groups["agent"].terminated.any() for step in steps)
    env.close()


def test_time_limit_keeps_terminations_that_happen_at_the_limit() -> None:
    env = marl_envs.make("toy/leave_early", num_envs=1, max_episode_steps=2)
    env.reset(seed=0)
    actions = {"agent": torch.zeros(1, 3, dtype=torch.int64)}
    env.step(actions)
    last = env.step(actions).groups["agent"]
    assert last.terminated.tolist() == [[False, True, False]]
    assert last.truncated.tolist() == [[False, False, True]]
    assert last.reward[0].tolist() == pytest.approx([0.0, 2.0, 0.1])
    env.close()


def _rollout(env: marl_envs.BatchedEnv, seed: int, num_steps: int) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    observations = env.reset(seed=seed).groups
    tensors = [group.obs for group in observations.values()]
    for _ in range(num_steps):
        step = env.step(marl_envs.random_actions(env.groups, observations, generator))
        observations = {name: group.next for name, group in step.groups.items()}
        for group in step.groups.values():
            tensors += [group.reward, group.final_obs, group.next.obs, group.truncated]
    return tensors


def test_same_seed_gives_identical_rollouts_and_other_seeds_differ() -> None:
    def rollout(seed: int) -> list[torch.Tensor]:
        with SyncVectorEnv(TaskFactory(SPREAD), 2) as env:
            return _rollout(env, seed, 30)

    first, again, other = rollout(3), rollout(3), rollout(4)
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(first, other, strict=True))


def test_returned_tensors_are_never_overwritten() -> None:
    env = marl_envs.make(SPREAD, num_envs=2)
    reset = env.reset(seed=0)
    kept_obs = reset.groups["agent"].obs
    snapshot = kept_obs.clone()
    step = env.step({"agent": torch.zeros(2, 3, dtype=torch.int64)})
    kept = [step.groups["agent"].reward, step.groups["agent"].next.obs, step.state]
    snapshots = [tensor.clone() for tensor in kept if tensor is not None]
    env.step({"agent": torch.full((2, 3), 4, dtype=torch.int64)})
    assert torch.equal(kept_obs, snapshot)
    assert all(torch.equal(a, b) for a, b in zip(kept, snapshots, strict=True))
    env.close()


def test_output_dtypes_and_device() -> None:
    env = marl_envs.make(SPREAD, num_envs=2)
    assert env.device == torch.device("cpu")
    assert env.state_shape == (54,)
    env.reset(seed=0)
    step = env.step({"agent": torch.zeros(2, 3, dtype=torch.int64)})
    group = step.groups["agent"]
    assert group.next.obs.dtype == group.reward.dtype == group.final_obs.dtype == torch.float32
    assert group.terminated.dtype == group.truncated.dtype == group.next.alive.dtype == torch.bool
    assert group.next.obs.shape == (2, 3, 18) and group.reward.shape == (2, 3)
    assert step.env_done.shape == (2,) and step.state is not None and step.state.shape == (2, 54)
    env.close()


def test_box_and_discrete_actions_reach_the_env_as_pettingzoo_expects() -> None:
    env = SyncVectorEnv(hetero_env, 2)
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    actions, per_copy = draw_actions(env.groups, 2, rng)
    env.step(actions)
    for row, copy in enumerate(env.envs):
        received = copy.last_actions
        assert received["scout_1"] == per_copy[row]["scout_1"]
        assert isinstance(received["scout_1"], int)
        assert received["lift_0"].dtype == np.float32
        np.testing.assert_array_equal(received["lift_0"], per_copy[row]["lift_0"])
    env.close()


def test_bad_actions_are_rejected_with_the_expected_shape() -> None:
    env = marl_envs.make(SPREAD, num_envs=2)
    env.reset(seed=0)
    with pytest.raises(ActionError, match=r"groups \['agent'\]"):
        env.step({"agents": torch.zeros(2, 3, dtype=torch.int64)})
    with pytest.raises(ActionError, match=r"shape \[2, 3\].*got \[3, 2\]"):
        env.step({"agent": torch.zeros(3, 2, dtype=torch.int64)})
    with pytest.raises(ActionError, match="int64"):
        env.step({"agent": torch.zeros(2, 3)})
    env.close()


def test_lifecycle_errors_and_idempotent_close() -> None:
    env = marl_envs.make(SPREAD, num_envs=1)
    with pytest.raises(RuntimeError, match="reset"):
        env.step({"agent": torch.zeros(1, 3, dtype=torch.int64)})
    env.close()
    env.close()
    with pytest.raises(RuntimeError, match="closed"):
        env.reset(seed=0)
    with pytest.raises(ValueError, match="num_envs"):
        marl_envs.make(SPREAD, num_envs=0)


def test_agent_removed_without_a_flag_is_recorded_as_truncated() -> None:
    env = SyncVectorEnv(VanishingEnv, 1, groups={"agent": ["agent_0", "agent_1"]})
    env.reset(seed=0)
    actions = {"agent": torch.zeros(1, 2, dtype=torch.int64)}
    first = env.step(actions).groups["agent"]
    assert first.truncated.tolist() == [[False, True]]
    assert first.next.alive.tolist() == [[True, False]]
    second = env.step(actions)
    assert second.env_done.tolist() == [True]
    assert second.groups["agent"].truncated.tolist() == [[True, False]]
    env.close()
