"""random_actions (marl_envs.sampling)."""

from __future__ import annotations

import torch
from gymnasium import spaces
from marl_envs import GroupObs, GroupSpec, random_actions


def _spec(action_space: spaces.Space, num_agents: int = 2) -> GroupSpec:
    return GroupSpec(
        name="unit",
        agents=tuple(f"unit_{index}" for index in range(num_agents)),
        obs_shape=(1,),
        obs_mask=torch.ones(num_agents, 1, dtype=torch.bool),
        action_space=action_space,
    )


def _obs(num_envs: int, mask: torch.Tensor | None = None) -> GroupObs:
    alive = torch.ones(num_envs, 2, dtype=torch.bool)
    return GroupObs(obs=torch.zeros(num_envs, 2, 1), alive=alive, action_mask=mask)


def test_discrete_actions_respect_masks_and_start() -> None:
    mask = torch.zeros(500, 2, 4, dtype=torch.bool)
    mask[:, 0, 2] = True
    mask[:, 1, 1:3] = True
    generator = torch.Generator().manual_seed(0)
    spec = _spec(spaces.Discrete(4, start=10))
    actions = random_actions({"unit": spec}, {"unit": _obs(500, mask)}, generator)["unit"]
    assert actions.shape == (500, 2) and actions.dtype == torch.int64
    assert set(actions[:, 0].tolist()) == {12}
    assert set(actions[:, 1].tolist()) == {11, 12}


def test_all_false_mask_rows_fall_back_to_uniform() -> None:
    mask = torch.zeros(50, 2, 3, dtype=torch.bool)
    spec = _spec(spaces.Discrete(3))
    actions = random_actions({"unit": spec}, {"unit": _obs(50, mask)})["unit"]
    assert set(actions.flatten().tolist()) <= {0, 1, 2}


def test_box_actions_stay_within_bounds_and_are_seeded() -> None:
    spec = _spec(spaces.Box(low=-2.0, high=0.5, shape=(3,)))

    def draw(seed: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(seed)
        return random_actions({"unit": spec}, {"unit": _obs(200)}, generator)["unit"]

    actions = draw(0)
    assert actions.shape == (200, 2, 3) and actions.dtype == torch.float32
    assert actions.min() >= -2.0 and actions.max() <= 0.5
    assert torch.equal(actions, draw(0)) and not torch.equal(actions, draw(1))
