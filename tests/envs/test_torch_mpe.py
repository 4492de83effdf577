"""Torch MPE tasks: physics by hand, action decoding, auto-reset, seeding, registry, API."""

from __future__ import annotations

import math
import warnings

import marl_envs
import pytest
import torch
from marl_envs import ActionError, GroupingError, TaskKwargsError, make, make_parallel_env
from marl_envs.torch_mpe import (
    Physics,
    TorchMPEEnv,
    WorldState,
    simple_reference_v3,
    simple_speaker_listener_v4,
    simple_spread_v3,
)
from pettingzoo.test import parallel_api_test

TASK_IDS = ["torch/simple_spread_v3", "torch/simple_speaker_listener_v4",
            "torch/simple_reference_v3", "torch/hidden_colours_v0"]


def _world(agent_pos: list[list[float]], agent_vel: list[list[float]] | None = None,
           dim_c: int = 2) -> WorldState:
    """One copy with agents at ``agent_pos`` (no landmarks, silent, no goals)."""
    position = torch.tensor([agent_pos], dtype=torch.float64)
    velocity = torch.zeros_like(position) if agent_vel is None else torch.tensor(
        [agent_vel], dtype=torch.float64)
    n = position.shape[1]
    return WorldState(position, velocity, torch.zeros(1, n, dim_c, dtype=torch.float64),
                      torch.zeros(1, 0, 2, dtype=torch.float64),
                      torch.full((1, n), -1, dtype=torch.int64))


# ------------------------------------------------------------------- physics
def test_overlapping_agents_are_pushed_apart_by_hand_computed_force() -> None:
    physics = Physics(size=(0.15, 0.15), movable=(True, True), collide=(True, True))
    world = _world([[0.0, 0.0], [0.2, 0.0]])  # 0.1 closer than the radii's sum 0.3
    # k * log(1 + exp(0.1 / k)) with k = 1e-3 is 0.1 to double precision; times 100.
    force = physics.contact_forces(world.agent_pos)
    torch.testing.assert_close(force[0], torch.tensor([[-10.0, 0.0], [10.0, 0.0]],
                                                      dtype=torch.float64))
    no_action = torch.zeros(1, 2, 2, dtype=torch.float64)
    after = physics.step(world, no_action, world.comm)
    # Positions move with the old (zero) velocity; velocity gains force / mass * dt.
    torch.testing.assert_close(after.agent_pos, world.agent_pos)
    torch.testing.assert_close(after.agent_vel[0], torch.tensor([[-1.0, 0.0], [1.0, 0.0]],
                                                                dtype=torch.float64))
    again = physics.step(after, no_action, world.comm)
    torch.testing.assert_close(again.agent_pos[0, 0], torch.tensor([-0.1, 0.0],
                                                                   dtype=torch.float64))


def test_distant_agents_feel_almost_no_contact_force() -> None:
    physics = Physics(size=(0.15, 0.15), movable=(True, True), collide=(True, True))
    force = physics.contact_forces(_world([[0.0, 0.0], [0.5, 0.0]]).agent_pos)
    # 0.2 beyond contact: 100 * 1e-3 * log(1 + exp(-200)), about 1e-88.
    assert force.abs().max() < 1e-80


def test_non_colliding_agents_pass_through_each_other() -> None:
    physics = Physics(size=(0.15, 0.15), movable=(True, True), collide=(True, False))
    world = _world([[0.0, 0.0], [0.01, 0.0]])
    after = physics.step(world, torch.zeros(1, 2, 2, dtype=torch.float64), world.comm)
    torch.testing.assert_close(after.agent_vel, torch.zeros_like(after.agent_vel))


def test_damping_and_max_speed() -> None:
    world = _world([[0.0, 0.0]], agent_vel=[[0.4, 0.0]])
    push = torch.tensor([[[0.0, 5.0]]], dtype=torch.float64)
    free = Physics(size=(0.1,), movable=(True,), collide=(False,))
    after = free.step(world, push, world.comm)
    torch.testing.assert_close(after.agent_pos[0, 0], torch.tensor([0.04, 0.0],
                                                                   dtype=torch.float64))
    torch.testing.assert_close(after.agent_vel[0, 0], torch.tensor([0.3, 0.5],
                                                                   dtype=torch.float64))
    capped = Physics(size=(0.1,), movable=(True,), collide=(False,), max_speed=0.25)
    velocity = capped.step(world, push, world.comm).agent_vel[0, 0]
    assert math.isclose(float(velocity.norm()), 0.25)
    assert math.isclose(float(velocity[1] / velocity[0]), 0.5 / 0.3)


def test_speaker_never_moves() -> None:
    env = simple_speaker_listener_v4(num_envs=3)
    env.reset(seed=0)
    start = env.world.agent_pos[:, 0].clone()
    for _ in range(10):
        env.advance({"speaker": torch.randint(3, (3, 1)), "listener": torch.full((3, 1), 2)})
    torch.testing.assert_close(env.world.agent_pos[:, 0], start)
    assert (env.world.agent_vel[:, 0] == 0).all()
    assert (env.world.agent_vel[:, 1, 0] > 0).all(), "listener action 2 pushes right"


# ------------------------------------------------------------------- actions
def test_discrete_reference_action_is_move_plus_five_times_word() -> None:
    env = simple_reference_v3(num_envs=1)
    force, word = env.decode_actions({"agent": torch.tensor([[23, 0]])})
    torch.testing.assert_close(force[0], torch.tensor([[0.0, -5.0], [0.0, 0.0]]))
    assert word[0, 0].tolist() == [0, 0, 0, 0, 1, 0, 0, 0, 0, 0]
    assert word[0, 1].tolist() == [1] + [0] * 9


def test_continuous_actions_are_clipped_and_differenced() -> None:
    env = simple_reference_v3(num_envs=1, continuous_actions=True)
    move = [0.9, 0.2, 0.7, 1.4, 0.1]  # 1.4 is clipped to 1
    words = [[0.5] * 10, [-1.0] * 10]  # -1 is clipped to 0
    action = torch.tensor([[move + words[0], [0.0] * 5 + words[1]]])
    force, word = env.decode_actions({"agent": action})
    torch.testing.assert_close(force[0, 0], torch.tensor([5 * 0.5, 5 * -0.9]))
    torch.testing.assert_close(word[0], torch.tensor([[0.5] * 10, [0.0] * 10]))


def test_bad_actions_are_rejected_with_the_expected_form() -> None:
    env = simple_spread_v3(num_envs=2)
    env.reset(seed=0)
    with pytest.raises(ActionError, match=r"shape \[2, 3\]"):
        env.step({"agent": torch.zeros(2, 2, dtype=torch.int64)})
    with pytest.raises(ActionError, match="integers"):
        env.step({"agent": torch.zeros(2, 3)})
    with pytest.raises(ActionError, match=r"\[0, 5\)"):
        env.step({"agent": torch.full((2, 3), 5)})
    with pytest.raises(ActionError, match="expected actions for groups"):
        env.step({"agents": torch.zeros(2, 3, dtype=torch.int64)})


# ------------------------------------------------------- episodes and resets
def test_episodes_truncate_at_max_cycles_and_reset_keeping_the_final_observation() -> None:
    env = simple_spread_v3(num_envs=4, max_cycles=5)
    twin = simple_spread_v3(num_envs=4, max_cycles=5)
    first, _ = env.reset(seed=1), twin.reset(seed=1)
    torch.testing.assert_close(first.state, first.groups["agent"].obs.flatten(1))
    actions = {"agent": torch.tensor([[1, 2, 3]] * 4)}
    for step in range(1, 11):
        result = env.step(actions)
        transition = twin.advance(actions)
        group = result.groups["agent"]
        end = step % 5 == 0
        assert not group.terminated.any()
        assert bool(group.truncated.all()) == end and bool(group.truncated.any()) == end
        assert bool(result.env_done.all()) == end
        torch.testing.assert_close(group.final_obs, transition.obs["agent"])
        torch.testing.assert_close(group.reward, transition.reward)
        torch.testing.assert_close(result.final_state, group.final_obs.flatten(1))
        torch.testing.assert_close(result.state, group.next.obs.flatten(1))
        assert group.next.alive.all()
        if end:  # the next episode starts at rest, elsewhere
            assert (group.next.obs[..., :2] == 0).all()
            assert not torch.equal(group.next.obs, group.final_obs)
            twin.set_world(env.world)
        else:
            assert group.next.obs is group.final_obs


def test_same_seed_same_episodes_other_seed_other_episodes() -> None:
    def start(seed: int) -> torch.Tensor:
        return simple_reference_v3(num_envs=8).reset(seed=seed).groups["agent"].obs

    torch.testing.assert_close(start(3), start(3))
    assert not torch.equal(start(3), start(4))


def test_goals_and_start_positions_cover_their_ranges() -> None:
    env = simple_reference_v3(num_envs=3000)
    env.reset(seed=0)
    assert set(env.world.goal.flatten().tolist()) == {0, 1, 2}
    for positions in (env.world.agent_pos, env.world.landmark_pos):
        assert positions.min() >= -1 and positions.max() <= 1
        assert positions.min() < -0.99 and positions.max() > 0.99


@pytest.mark.parametrize("num_agents", [1, 2, 6])
def test_spread_observation_size_follows_num_agents(num_agents: int) -> None:
    env = simple_spread_v3(num_envs=2, N=num_agents)
    obs = env.reset(seed=0).groups["agent"].obs
    assert obs.shape == (2, num_agents, 6 * num_agents)
    assert env.state_shape == (6 * num_agents * num_agents,)
    # Own position sits at features 2:4; landmark 0 relative to it at 4:6.
    torch.testing.assert_close(obs[..., 2:4], env.world.agent_pos.float())
    torch.testing.assert_close(obs[..., 4:6], (env.world.landmark_pos[:, :1]
                                               - env.world.agent_pos).float())


def test_bad_task_arguments_are_rejected() -> None:
    with pytest.raises(ValueError, match="N"):
        simple_spread_v3(N=0)
    with pytest.raises(ValueError, match="local_ratio"):
        simple_reference_v3(local_ratio=1.5)
    with pytest.raises(ValueError, match="max_cycles"):
        simple_spread_v3(max_cycles=0)
    with pytest.raises(ValueError, match="one copy"):
        marl_envs.torch_mpe.TorchMPEParallelEnv(simple_spread_v3(num_envs=2))


# ------------------------------------------------------------------ registry
def test_make_builds_batched_torch_envs_on_the_given_device() -> None:
    env = make("torch/simple_spread_v3", num_envs=5, kwargs={"N": 4, "max_cycles": 7},
               device="cpu", include_state=False)
    assert isinstance(env, TorchMPEEnv)
    assert env.num_envs == 5 and env.max_cycles == 7 and env.device == torch.device("cpu")
    assert env.state_shape is None and env.reset(seed=0).state is None
    assert {"torch/" + name for name in marl_envs.torch_mpe.TASKS} == set(
        marl_envs.list_tasks("torch"))


def test_make_rejects_options_that_do_not_apply_to_torch_tasks() -> None:
    task = "torch/simple_spread_v3"
    with pytest.raises(ValueError, match="vector='sync'"):
        make(task, num_envs=2, vector="subprocess")
    with pytest.raises(ValueError, match="max_cycles"):
        make(task, num_envs=2, max_episode_steps=10)
    with pytest.raises(ValueError, match="num_envs"):
        make(task, num_envs=2, kwargs={"num_envs": 3})
    with pytest.raises(TaskKwargsError, match="'N'"):
        make(task, num_envs=2, kwargs={"n": 3})
    with pytest.raises(GroupingError, match="fixed agent groups"):
        make("torch/simple_speaker_listener_v4", groups={"all": ["speaker_0", "listener_0"]})
    same = make("torch/simple_speaker_listener_v4",
                groups={"speaker": ["speaker_0"], "listener": ["listener_0"]})
    assert list(same.groups) == ["speaker", "listener"]


@pytest.mark.parametrize("continuous", [False, True], ids=["discrete", "continuous"])
@pytest.mark.parametrize("task", TASK_IDS)
def test_parallel_view_passes_the_pettingzoo_api_test(task: str, continuous: bool) -> None:
    env = make_parallel_env(task, {"continuous_actions": continuous, "max_cycles": 30})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the API test reports some failures as warnings
        parallel_api_test(env, num_cycles=60)
    observations, _ = env.reset(seed=0)
    assert env.state().shape == env.state_space.shape
    for agent, obs in observations.items():
        assert env.observation_space(agent).contains(obs)
