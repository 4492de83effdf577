"""Stepping PettingZoo env copies and writing their results into preallocated rows.

:class:`CopyBatch` owns copies ``lo..hi-1`` of a task and is the only code that talks to
PettingZoo: the in-process vector env runs one batch over all copies, each subprocess
worker runs one batch over its share. Both therefore produce identical outputs.

Per copy and step (:meth:`CopyRunner.step`):

1. Actions are read from the shared action buffers for the agents in ``env.agents``.
2. Rewards and ``terminated``/``truncated`` are recorded for every agent that was alive
   before the step, including agents that leave in it (their final reward is kept even
   when ``env.agents`` becomes empty). An agent that disappears without either flag is
   recorded as truncated: its episode was cut, not finished.
3. The returned observations go to ``final_obs`` (also for agents that just left, so a
   truncated agent can bootstrap from its last observation).
4. If the episode is over (``env.agents`` is empty, or every agent in it has terminated
   or been truncated), the copy is reset without a seed and the new first observations
   go to ``obs``; otherwise ``obs`` holds the observations of the agents still alive.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from marl_envs.buffers import StepArrays
from marl_envs.layout import EnvFactory, EnvLayout
from pettingzoo import ParallelEnv


class _AgentRow:
    """Views of one agent's slot in the buffers of one copy."""

    __slots__ = (
        "actions",
        "alive",
        "discrete",
        "final_obs",
        "mask",
        "obs",
        "observation_in_dict",
        "own_actions",
        "reward",
        "slot",
        "terminated",
        "truncated",
    )

    def __init__(self, agent: str, layout: EnvLayout, arrays: StepArrays, row: int) -> None:
        info = layout.agents[agent]
        group = arrays.groups[info.group]
        features = slice(0, info.obs_size) if info.obs_size is not None else slice(None)
        self.slot = info.slot
        self.discrete = info.discrete
        self.observation_in_dict = info.dict_obs
        self.obs = group.obs[row, info.slot, features]
        self.final_obs = group.final_obs[row, info.slot, features]
        self.mask = None if group.action_mask is None else group.action_mask[row, info.slot]
        self.own_actions = info.num_actions
        self.reward = group.reward[row]
        self.terminated = group.terminated[row]
        self.truncated = group.truncated[row]
        self.alive = group.alive[row]
        self.actions = group.action[row]

    def read_action(self) -> Any:
        """The agent's action as PettingZoo expects it: an int, or a float32 array copy."""
        action = self.actions[self.slot]
        return int(action) if self.discrete else action.copy()

    def write_obs(self, target: np.ndarray, observation: Any) -> None:
        if self.observation_in_dict:
            observation = observation["observation"]
        target[...] = observation

    def write_mask(self, observation: Any, info: dict[str, Any] | None) -> None:
        if self.mask is None:
            return
        own = self.mask if self.own_actions is None else self.mask[: self.own_actions]
        if self.observation_in_dict:
            own[...] = np.asarray(observation["action_mask"], dtype=bool)
        elif info is not None and "action_mask" in info:
            own[...] = np.asarray(info["action_mask"], dtype=bool)
        if self.own_actions is not None:
            self.mask[self.own_actions :] = False  # padding: actions this agent lacks


class CopyRunner:
    """One copy of the task, writing row ``row`` of the shared buffers."""

    def __init__(self, env: ParallelEnv, layout: EnvLayout, arrays: StepArrays, row: int):
        self.env = env
        self.row = row
        self._arrays = arrays
        self._rows = {agent: _AgentRow(agent, layout, arrays, row) for agent in layout.agents}
        self._has_state = layout.state_shape is not None
        self._alive: list[str] = []
        self._finished: set[str] = set()

    def reset(self, seed: int | None) -> None:
        """Reset the copy (seeded when ``seed`` is given) and write its first observation.

        The row must have been cleared by :meth:`StepArrays.clear`.
        """
        observations, infos = self.env.reset(seed=seed)
        self._begin_episode(observations, infos)

    def step(self) -> None:
        """Step the copy with the actions in its row; auto-reset when the episode ends.

        The row must have been cleared by :meth:`StepArrays.clear`.
        """
        env = self.env
        actions = {agent: self._rows[agent].read_action() for agent in env.agents}
        observations, rewards, terminations, truncations, infos = env.step(actions)
        for agent in self._alive:
            row = self._rows[agent]
            row.reward[row.slot] = rewards.get(agent, 0.0)
            terminated = bool(terminations.get(agent, False))
            truncated = bool(truncations.get(agent, False))
            row.terminated[row.slot] = terminated
            row.truncated[row.slot] = truncated
            if terminated or truncated:
                self._finished.add(agent)
        for agent, observation in observations.items():
            if agent in self._rows:
                self._rows[agent].write_obs(self._rows[agent].final_obs, observation)
        episode_over = all(agent in self._finished for agent in env.agents)
        self._truncate_vanished(episode_over)
        if self._has_state:
            self._write_state(self._arrays.final_state)
        if episode_over:
            self._arrays.env_done[self.row] = True
            observations, infos = env.reset()
            self._begin_episode(observations, infos)
        else:
            self._continue_episode(observations, infos)

    def _truncate_vanished(self, episode_over: bool) -> None:
        """Mark as truncated the agents whose episode ended without a flag from the env."""
        present = set(self.env.agents)
        for agent in self._alive:
            if agent in self._finished or (not episode_over and agent in present):
                continue
            row = self._rows[agent]
            row.truncated[row.slot] = True
            self._finished.add(agent)

    def _begin_episode(self, observations: dict[str, Any], infos: dict[str, Any]) -> None:
        self._finished.clear()
        self._alive = [agent for agent in self.env.agents if agent in self._rows]
        self._write_alive(observations, infos)
        if self._has_state:
            self._write_state(self._arrays.state)

    def _continue_episode(self, observations: dict[str, Any], infos: dict[str, Any]) -> None:
        self._alive = [
            agent
            for agent in self.env.agents
            if agent not in self._finished and agent in self._rows
        ]
        self._write_alive(observations, infos)
        if self._has_state:
            assert self._arrays.state is not None and self._arrays.final_state is not None
            self._arrays.state[self.row] = self._arrays.final_state[self.row]

    def _write_alive(self, observations: dict[str, Any], infos: dict[str, Any]) -> None:
        for agent in self._alive:
            row = self._rows[agent]
            row.alive[row.slot] = True
            observation = observations.get(agent)
            if observation is not None:
                row.write_obs(row.obs, observation)
                row.write_mask(observation, infos.get(agent))

    def _write_state(self, target: np.ndarray | None) -> None:
        assert target is not None
        target[self.row] = self.env.state()


class CopyBatch:
    """Copies ``lo..hi-1`` of a task, created from ``env_fn``, writing into ``arrays``."""

    def __init__(self, env_fn: EnvFactory, layout: EnvLayout, arrays: StepArrays, lo: int, hi: int):
        self.rows = slice(lo, hi)
        self._arrays = arrays
        self.runners = [CopyRunner(env_fn(), layout, arrays, row) for row in range(lo, hi)]

    def reset(self, seed: int | None) -> None:
        """Reset every copy; copy ``i`` gets ``seed + i`` when a seed is given."""
        self._arrays.clear(self.rows)
        for runner in self.runners:
            runner.reset(None if seed is None else seed + runner.row)

    def step(self) -> None:
        """Step every copy with the actions currently in the action buffers."""
        self._arrays.clear(self.rows)
        for runner in self.runners:
            runner.step()

    def close(self) -> None:
        for runner in self.runners:
            runner.env.close()
