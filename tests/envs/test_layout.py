"""Grouping, padding, action masks and space validation (marl_envs.layout)."""

from __future__ import annotations

import marl_envs
import numpy as np
import pytest
import torch
from gymnasium import spaces
from hand_stepping import HandStepped, draw_actions
from marl_envs import GroupingError, SyncVectorEnv, UnsupportedSpaceError, default_groups
from marl_envs.layout import describe_env
from tiny_parallel_envs import SpacesEnv, box, hetero_env, multidiscrete_env


def test_default_groups_use_name_prefixes_in_order_of_appearance() -> None:
    agents = ["adversary_0", "agent_0", "agent_1", "speaker_0", "listener", "x_1_2", "agent_2"]
    assert default_groups(agents) == {
        "adversary": ["adversary_0"],
        "agent": ["agent_0", "agent_1", "agent_2"],
        "speaker": ["speaker_0"],
        "listener": ["listener"],
        "x_1": ["x_1_2"],
    }


def test_speaker_listener_gives_two_groups_with_their_own_spaces() -> None:
    env = marl_envs.make("mpe2/simple_speaker_listener_v4", num_envs=2)
    assert list(env.groups) == ["speaker", "listener"]
    speaker, listener = env.groups["speaker"], env.groups["listener"]
    assert speaker.agents == ("speaker_0",) and listener.agents == ("listener_0",)
    assert speaker.obs_shape == (3,) and listener.obs_shape == (11,)
    assert speaker.action_space == spaces.Discrete(3)
    assert listener.action_space == spaces.Discrete(5)
    reset = env.reset(seed=0)
    assert reset.groups["speaker"].obs.shape == (2, 1, 3)
    assert reset.groups["listener"].obs.shape == (2, 1, 11)
    env.close()


def test_explicit_grouping_sets_group_order_and_slots() -> None:
    groups = {"right": ["agent_2", "agent_1"], "left": ["agent_0"]}
    env = marl_envs.make("mpe2/simple_spread_v3", num_envs=2, groups=groups)
    assert list(env.groups) == ["right", "left"]
    assert env.groups["right"].agents == ("agent_2", "agent_1")
    reset = env.reset(seed=0)
    reference = HandStepped(marl_envs.TaskFactory("mpe2/simple_spread_v3"), 2, seed=0)
    expected = torch.from_numpy(reference.first[1].obs["agent_2"])
    torch.testing.assert_close(reset.groups["right"].obs[1, 0], expected)
    step = env.step(
        {
            "right": torch.zeros(2, 2, dtype=torch.int64),
            "left": torch.zeros(2, 1, dtype=torch.int64),
        }
    )
    assert step.groups["right"].reward.shape == (2, 2)
    env.close()


@pytest.mark.parametrize(
    ("groups", "message"),
    [
        ({"a": ["agent_0", "agent_1"]}, r"\['agent_2'\] are in no group"),
        ({"a": ["agent_0", "agent_1"], "b": ["agent_1", "agent_2"]}, "'agent_1' is in groups"),
        ({"a": ["agent_0", "agent_1", "agent_2", "agent_9"]}, "'agent_9', which is not an agent"),
        ({"a": [], "b": ["agent_0", "agent_1", "agent_2"]}, "non-empty list"),
        ({"a": "agent_0"}, "non-empty list"),
    ],
)
def test_bad_groupings_name_the_problem(groups: dict, message: str) -> None:
    with pytest.raises(GroupingError, match=message):
        marl_envs.make("mpe2/simple_spread_v3", groups=groups)


def test_discrete_agents_with_fewer_actions_are_padded_and_masked() -> None:
    groups = {"team": ["speaker_0", "listener_0"]}
    env = marl_envs.make("mpe2/simple_speaker_listener_v4", num_envs=3, groups=groups)
    team = env.groups["team"]
    assert team.action_space == spaces.Discrete(5) and team.has_action_mask
    out = env.reset(seed=0).groups["team"]
    assert out.action_mask is not None
    assert out.action_mask[:, 0].tolist() == [[True, True, True, False, False]] * 3
    assert out.action_mask[:, 1].all()
    generator = torch.Generator().manual_seed(0)
    for _ in range(30):  # across an episode end (25 steps): masks survive auto-reset
        actions = marl_envs.random_actions(env.groups, {"team": out}, generator)
        assert (actions["team"][:, 0] < 3).all()
        out = env.step(actions).groups["team"].next
        assert out.action_mask is not None
        assert not out.action_mask[:, 0, 3:].any() and out.action_mask[:, 0, :3].all()
    env.close()


def test_group_mixing_discrete_and_box_actions_names_agents_and_spaces() -> None:
    env = SpacesEnv(
        observation_spaces={"arm_0": box(3), "arm_1": box(3)},
        action_spaces={"arm_0": spaces.Discrete(3), "arm_1": box(2)},
    )
    with pytest.raises(GroupingError) as caught:
        describe_env(env, {"arms": ["arm_0", "arm_1"]})
    message = str(caught.value)
    assert "'arm_0' has Discrete(3)" in message and "'arm_1' has Box" in message


def test_shorter_observations_are_zero_padded_and_masked() -> None:
    env = SyncVectorEnv(hetero_env, 2)
    scout = env.groups["scout"]
    assert scout.obs_shape == (6,)
    assert scout.obs_mask.tolist() == [[True] * 4 + [False] * 2, [True] * 6]
    reset = env.reset(seed=0)
    reference = HandStepped(hetero_env, 2, seed=0)
    observed = reset.groups["scout"].obs
    torch.testing.assert_close(
        observed[0, 0, :4], torch.from_numpy(reference.first[0].obs["scout_0"])
    )
    assert observed[:, 0, 4:].abs().sum() == 0
    env.close()


def test_multi_axis_observations_keep_their_shape() -> None:
    env = SyncVectorEnv(hetero_env, 2)
    assert env.groups["lift"].obs_shape == (2, 3)
    assert env.groups["lift"].obs_mask.shape == (1, 2, 3)
    assert env.reset(seed=0).groups["lift"].obs.shape == (2, 1, 2, 3)
    env.close()


def test_multi_axis_observations_of_different_shapes_cannot_share_a_group() -> None:
    def make_env() -> SpacesEnv:
        return SpacesEnv(
            {"cam_0": box(2, 3), "cam_1": box(3, 2)},
            {"cam_0": spaces.Discrete(2), "cam_1": spaces.Discrete(2)},
        )

    with pytest.raises(GroupingError, match=r"cam_0: \(2, 3\), cam_1: \(3, 2\)"):
        SyncVectorEnv(make_env, 1)


def test_action_masks_from_dict_observations_and_from_infos() -> None:
    env = SyncVectorEnv(hetero_env, 3)
    assert env.groups["carrier"].has_action_mask and env.groups["relay"].has_action_mask
    assert not env.groups["scout"].has_action_mask
    reference = HandStepped(hetero_env, 3, seed=5)
    reset = env.reset(seed=5)
    assert reset.groups["scout"].action_mask is None
    rng = np.random.default_rng(0)
    for _ in range(6):
        actions, per_copy = draw_actions(env.groups, 3, rng)
        step = env.step(actions)
        carrier_mask = step.groups["carrier"].next.action_mask
        relay_mask = step.groups["relay"].next.action_mask
        assert carrier_mask is not None and relay_mask is not None
        assert carrier_mask.shape == (3, 2, 5) and carrier_mask.dtype == torch.bool
        for row, record in enumerate(reference.step(per_copy)):
            carriers = [record.obs[agent]["action_mask"] for agent in ("carrier_0", "carrier_1")]
            assert carrier_mask[row].tolist() == np.asarray(carriers, dtype=bool).tolist()
            relay = record.infos["relay_0"]["action_mask"]
            assert relay_mask[row, 0].tolist() == np.asarray(relay, dtype=bool).tolist()
    env.close()


def test_action_masks_allow_everything_for_agents_not_alive() -> None:
    def make_env() -> SpacesEnv:
        observation = spaces.Dict({"observation": box(2), "action_mask": spaces.MultiBinary(3)})
        return SpacesEnv({"unit_0": observation}, {"unit_0": spaces.Discrete(3)}, length=1)

    env = SyncVectorEnv(make_env, 2, groups={"unit": ["unit_0"]})
    env.reset(seed=0)
    step = env.step({"unit": torch.zeros(2, 1, dtype=torch.int64)})
    mask = step.groups["unit"].next.action_mask
    assert mask is not None and mask.shape == (2, 1, 3)
    env.close()


def test_multidiscrete_action_is_rejected_naming_agent_space_and_fix() -> None:
    with pytest.raises(UnsupportedSpaceError) as caught:
        SyncVectorEnv(multidiscrete_env, 1)
    message = str(caught.value)
    assert "'robot_1'" in message and "MultiDiscrete([3 2])" in message
    assert "Discrete or Box" in message and "flatten" in message
    assert isinstance(caught.value, TypeError)


def test_non_box_observation_is_rejected_naming_agent_and_space() -> None:
    def make_env() -> SpacesEnv:
        return SpacesEnv({"agent_0": spaces.Discrete(4)}, {"agent_0": spaces.Discrete(2)})

    with pytest.raises(
        UnsupportedSpaceError, match=r"'agent_0' has observation space Discrete\(4\)"
    ):
        SyncVectorEnv(make_env, 1)


def test_action_mask_with_box_actions_is_rejected() -> None:
    def make_env() -> SpacesEnv:
        observation = spaces.Dict({"observation": box(2), "action_mask": spaces.MultiBinary(2)})
        return SpacesEnv({"arm_0": observation}, {"arm_0": box(2)})

    with pytest.raises(UnsupportedSpaceError, match="Discrete actions only"):
        SyncVectorEnv(make_env, 1)
