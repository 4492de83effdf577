"""Tiny configurable ParallelEnvs for the marl_envs tests (importable by workers too)."""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces
from pettingzoo import ParallelEnv


class SpacesEnv(ParallelEnv):
    """Agents observe seeded samples of their observation spaces for ``length`` steps.

    Rewards are ``step + agent number`` (so every slot is distinguishable), the episode is
    truncated at ``length``. Dict observations carry a random action mask with at least
    one allowed action; agents in ``info_masks`` get such a mask in ``infos`` instead.
    The last actions received are kept in ``last_actions``. With ``fail_at_step`` the env
    raises ``RuntimeError`` at that step.
    """

    def __init__(
        self,
        observation_spaces: dict[str, spaces.Space[Any]],
        action_spaces: dict[str, spaces.Space[Any]],
        length: int = 4,
        info_masks: tuple[str, ...] = (),
        fail_at_step: int | None = None,
    ) -> None:
        self.metadata = {"name": "spaces_v0", "render_modes": []}
        self.possible_agents = list(observation_spaces)
        self.observation_spaces = observation_spaces
        self.action_spaces = action_spaces
        self.agents: list[str] = []
        self.length = length
        self.info_masks = info_masks
        self.fail_at_step = fail_at_step
        self.last_actions: dict[str, Any] = {}
        self._rng = np.random.default_rng()
        self._steps = 0

    def observation_space(self, agent: str) -> spaces.Space[Any]:
        return self.observation_spaces[agent]

    def action_space(self, agent: str) -> spaces.Space[Any]:
        return self.action_spaces[agent]

    def reset(
        self, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        self.agents = list(self.possible_agents)
        self._steps = 0
        return self._observations(), self._infos()

    def step(self, actions: dict[str, Any]) -> tuple[Any, ...]:
        self._steps += 1
        if self._steps == self.fail_at_step:
            raise RuntimeError(f"SpacesEnv failed on purpose at step {self._steps}")
        self.last_actions = dict(actions)
        observations, infos = self._observations(), self._infos()
        rewards = {agent: float(self._steps + number) for number, agent in enumerate(self.agents)}
        done = self._steps >= self.length
        terminations = dict.fromkeys(self.agents, False)
        truncations = dict.fromkeys(self.agents, done)
        if done:
            self.agents = []
        return observations, rewards, terminations, truncations, infos

    def _sample(self, space: spaces.Space[Any]) -> Any:
        if isinstance(space, spaces.Box):
            return self._rng.uniform(-1, 1, size=space.shape).astype(space.dtype)
        if isinstance(space, spaces.Dict):
            observation = self._sample(space["observation"])
            mask_space = space["action_mask"]
            assert isinstance(mask_space, spaces.MultiBinary)
            size = int(np.prod(mask_space.shape))
            return {"observation": observation, "action_mask": self._mask(size)}
        return self._rng.integers(0, 2, size=getattr(space, "shape", ()))

    def _mask(self, size: int) -> np.ndarray:
        mask = self._rng.integers(0, 2, size=size).astype(np.int8)
        mask[self._rng.integers(size)] = 1
        return mask

    def _num_actions(self, agent: str) -> int:
        space = self.action_spaces[agent]
        assert isinstance(space, spaces.Discrete)
        return int(space.n)

    def _observations(self) -> dict[str, Any]:
        return {agent: self._sample(self.observation_spaces[agent]) for agent in self.agents}

    def _infos(self) -> dict[str, dict[str, Any]]:
        return {
            agent: (
                {"action_mask": self._mask(self._num_actions(agent))}
                if agent in self.info_masks
                else {}
            )
            for agent in self.agents
        }


def box(*shape: int) -> spaces.Box:
    return spaces.Box(-1.0, 1.0, shape=shape, dtype=np.float32)


def masked(size: int, actions: int) -> spaces.Dict:
    """A PettingZoo-classic style observation: a Box plus an action mask."""
    return spaces.Dict({"observation": box(size), "action_mask": spaces.MultiBinary(actions)})


def hetero_env(length: int = 4) -> SpacesEnv:
    """Padding and masks: ``scout_0/1`` (obs 4 and 6), ``carrier_0/1`` (Dict obs with
    mask), ``relay_0`` (mask in infos), ``lift_0`` (Box action of shape (2,))."""
    return SpacesEnv(
        observation_spaces={
            "scout_0": box(4),
            "scout_1": box(6),
            "carrier_0": masked(3, 5),
            "carrier_1": masked(3, 5),
            "relay_0": box(2),
            "lift_0": box(2, 3),
        },
        action_spaces={
            "scout_0": spaces.Discrete(3),
            "scout_1": spaces.Discrete(3),
            "carrier_0": spaces.Discrete(5),
            "carrier_1": spaces.Discrete(5),
            "relay_0": spaces.Discrete(4),
            "lift_0": spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32),
        },
        length=length,
        info_masks=("relay_0",),
    )


def multidiscrete_env() -> SpacesEnv:
    return SpacesEnv(
        observation_spaces={"robot_0": box(3), "robot_1": box(3)},
        action_spaces={
            "robot_0": spaces.Discrete(2),
            "robot_1": spaces.MultiDiscrete([3, 2]),
        },
    )


def failing_env() -> SpacesEnv:
    return SpacesEnv({"agent_0": box(2)}, {"agent_0": spaces.Discrete(2)}, fail_at_step=3)


def not_an_env() -> str:
    return "not an env"


class VanishingEnv(ParallelEnv):
    """``agent_1`` disappears after step 1 without any flag (an env bug we tolerate);
    ``agent_0`` is truncated after step 2."""

    def __init__(self) -> None:
        self.metadata = {"name": "vanishing_v0", "render_modes": []}
        self.possible_agents = ["agent_0", "agent_1"]
        self.agents: list[str] = []
        self._box = box(1)
        self._steps = 0

    def observation_space(self, agent: str) -> spaces.Space[Any]:
        return self._box

    def action_space(self, agent: str) -> spaces.Space[Any]:
        return spaces.Discrete(2)

    def reset(
        self, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
        self.agents = list(self.possible_agents)
        self._steps = 0
        return {agent: np.ones(1, np.float32) for agent in self.agents}, {}

    def step(self, actions: dict[str, Any]) -> tuple[Any, ...]:
        self._steps += 1
        self.agents = ["agent_0"] if self._steps == 1 else []
        observations = {"agent_0": np.ones(1, np.float32)}
        return observations, {"agent_0": 1.0}, {}, {"agent_0": self._steps == 2}, {}
