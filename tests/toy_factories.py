"""PettingZoo env factories for tests, importable as ``toy_factories:<name>`` tasks."""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces
from marl_envs.tasks.coop_match import CoopMatchEnv
from marl_envs.tasks.endless import EndlessEnv
from pettingzoo import ParallelEnv
from pettingzoo.utils.wrappers import BaseParallelWrapper


class TruncationAsTermination(BaseParallelWrapper):
    """Reports time limits as terminations: the bug the truncation test must catch."""

    def step(self, actions: dict[str, Any]) -> Any:
        obs, rewards, terminated, truncated, infos = self.env.step(actions)
        terminated = {a: terminated[a] or truncated[a] for a in terminated}
        truncated = dict.fromkeys(truncated, False)
        return obs, rewards, terminated, truncated, infos


def endless_as_terminating(**kwargs: Any) -> TruncationAsTermination:
    return TruncationAsTermination(EndlessEnv(**kwargs))


class NanAfter(BaseParallelWrapper):
    """Rewards turn NaN after ``after`` steps (counted across resets)."""

    def __init__(self, env: Any, after: int) -> None:
        super().__init__(env)
        self.after = after
        self.count = 0

    def step(self, actions: dict[str, Any]) -> Any:
        obs, rewards, terminated, truncated, infos = self.env.step(actions)
        self.count += 1
        if self.count > self.after:
            rewards = dict.fromkeys(rewards, float(np.nan))
        return obs, rewards, terminated, truncated, infos


def coop_match_nan_after(after: int = 100, **kwargs: Any) -> NanAfter:
    return NanAfter(CoopMatchEnv(**kwargs), after)


class _CoopMatchWithoutState(CoopMatchEnv):
    def state(self) -> np.ndarray:
        raise NotImplementedError("this task has no global state")


def coop_match_without_state(**kwargs: Any) -> CoopMatchEnv:
    return _CoopMatchWithoutState(**kwargs)


class OffsetActionsEnv(ParallelEnv):
    """Two agents whose actions are ``Discrete(3, start=start)``: ``start .. start + 2``.

    ``agent_1``'s ``infos`` mask out its first action (``start``: mask index 0, as in
    gymnasium's ``Discrete.sample(mask)``). Every action received is appended to
    :data:`RECEIVED`; one outside the space, or masked, raises ``ValueError``. Reward 1 for
    the last action, episodes are truncated after 4 steps.
    """

    def __init__(self, start: int = 5) -> None:
        self.metadata = {"name": "offset_actions_v0", "render_modes": []}
        self.start = start
        self.possible_agents = ["agent_0", "agent_1"]
        self.agents: list[str] = []
        self._obs_space = spaces.Box(-1.0, 1.0, (2,), np.float32)
        self._action_space = spaces.Discrete(3, start=start)
        self._rng = np.random.default_rng(0)
        self._steps = 0

    def observation_space(self, agent: str) -> spaces.Space[Any]:
        return self._obs_space

    def action_space(self, agent: str) -> spaces.Space[Any]:
        return self._action_space

    def _observe(self) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
        obs = {a: self._rng.uniform(-1, 1, 2).astype(np.float32) for a in self.agents}
        infos: dict[str, dict[str, Any]] = {a: {} for a in self.agents}
        if "agent_1" in infos:
            infos["agent_1"]["action_mask"] = np.array([0, 1, 1], dtype=np.int8)
        return obs, infos

    def reset(self, seed: int | None = None, options: dict[str, Any] | None = None) -> Any:
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        self.agents = list(self.possible_agents)
        self._steps = 0
        return self._observe()

    def step(self, actions: dict[str, Any]) -> Any:
        for agent, action in actions.items():
            RECEIVED.append((agent, int(action)))
            if not self._action_space.contains(action):
                raise ValueError(f"{agent} got action {action}, outside {self._action_space}")
            if agent == "agent_1" and action == self.start:
                raise ValueError(f"agent_1 got its masked action {action}")
        rewards = {a: float(actions[a] == self.start + 2) for a in self.agents}
        self._steps += 1
        done = self._steps >= 4
        obs, infos = self._observe()
        terminations = dict.fromkeys(self.agents, False)
        truncations = dict.fromkeys(self.agents, done)
        if done:
            self.agents = []
        return obs, rewards, terminations, truncations, infos


RECEIVED: list[tuple[str, int]] = []
"""``(agent, action)`` pairs every :class:`OffsetActionsEnv` in this process received."""


def offset_actions(start: int = 5) -> OffsetActionsEnv:
    return OffsetActionsEnv(start)


class PaddedObsEnv(ParallelEnv):
    """``agent_0`` observes 2 features, always ``[1, 1]``; ``agent_1`` observes 4, always
    ``[3, 3, 5, 7]``. In one group ``agent_0`` is padded to ``[1, 1, 0, 0]``: features 3
    and 4 are really observed by ``agent_1`` alone. Discrete(2) actions, no reward,
    episodes truncated after 4 steps."""

    def __init__(self) -> None:
        self.metadata = {"name": "padded_obs_v0", "render_modes": []}
        self.values = {"agent_0": np.array([1, 1], np.float32),
                       "agent_1": np.array([3, 3, 5, 7], np.float32)}
        self.possible_agents = ["agent_0", "agent_1"]
        self.agents: list[str] = []
        self._steps = 0

    def observation_space(self, agent: str) -> spaces.Space[Any]:
        return spaces.Box(-10.0, 10.0, self.values[agent].shape, np.float32)

    def action_space(self, agent: str) -> spaces.Space[Any]:
        return spaces.Discrete(2)

    def reset(self, seed: int | None = None, options: dict[str, Any] | None = None) -> Any:
        self.agents = list(self.possible_agents)
        self._steps = 0
        return {a: self.values[a].copy() for a in self.agents}, {a: {} for a in self.agents}

    def step(self, actions: dict[str, Any]) -> Any:
        self._steps += 1
        done = self._steps >= 4
        obs = {a: self.values[a].copy() for a in self.agents}
        rewards = dict.fromkeys(self.agents, 0.0)
        terminations = dict.fromkeys(self.agents, False)
        truncations = dict.fromkeys(self.agents, done)
        infos: dict[str, dict[str, Any]] = {a: {} for a in self.agents}
        if done:
            self.agents = []
        return obs, rewards, terminations, truncations, infos


def padded_obs() -> PaddedObsEnv:
    return PaddedObsEnv()


class ShapedObsEnv(ParallelEnv):
    """Two agents observing arrays of ``shape``: images ``(7, 7, 3)`` in ``0..255`` (uint8)
    or entity rows ``(N, F)`` whose last row is absent (zeros). Each step lights one random
    cue: agent ``i`` earns 1 for the action equal to it (``Discrete(3)``). Episodes are
    truncated after 4 steps."""

    def __init__(self, shape: tuple[int, ...] = (7, 7, 3)) -> None:
        self.metadata = {"name": "shaped_obs_v0", "render_modes": []}
        self.shape = tuple(shape)
        self.image = len(self.shape) == 3
        self.possible_agents = ["agent_0", "agent_1"]
        self.agents: list[str] = []
        self._rng = np.random.default_rng(0)
        self._cue: dict[str, int] = {}
        self._steps = 0

    def observation_space(self, agent: str) -> spaces.Space[Any]:
        if self.image:
            return spaces.Box(0, 255, self.shape, np.uint8)
        return spaces.Box(-1.0, 1.0, self.shape, np.float32)

    def action_space(self, agent: str) -> spaces.Space[Any]:
        return spaces.Discrete(3)

    def _observe(self) -> dict[str, Any]:
        obs = {}
        self._cue = {a: int(self._rng.integers(3)) for a in self.agents}
        for agent, cue in self._cue.items():
            if self.image:
                view = self._rng.integers(0, 64, self.shape).astype(np.uint8)
                view[cue, :, cue % self.shape[-1]] = 255
            else:
                view = self._rng.uniform(-0.1, 0.1, self.shape).astype(np.float32)
                view[0, cue % self.shape[1]] = 1.0
                view[-1] = 0.0
            obs[agent] = view
        return obs

    def reset(self, seed: int | None = None, options: dict[str, Any] | None = None) -> Any:
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        self.agents = list(self.possible_agents)
        self._steps = 0
        return self._observe(), {a: {} for a in self.agents}

    def step(self, actions: dict[str, Any]) -> Any:
        rewards = {a: float(int(actions[a]) == self._cue[a]) for a in self.agents}
        self._steps += 1
        done = self._steps >= 4
        obs = self._observe()
        terminations = dict.fromkeys(self.agents, False)
        truncations = dict.fromkeys(self.agents, done)
        infos: dict[str, dict[str, Any]] = {a: {} for a in self.agents}
        if done:
            self.agents = []
        return obs, rewards, terminations, truncations, infos


def image_obs() -> ShapedObsEnv:
    return ShapedObsEnv((7, 7, 3))


def entity_obs() -> ShapedObsEnv:
    return ShapedObsEnv((4, 3))
