"""A PettingZoo ``ParallelEnv`` view of one copy of a torch MPE task.

For tools that expect PettingZoo (``parallel_api_test``, evaluation scripts, rendering
of trajectories elsewhere): dicts keyed by agent, NumPy float32 observations, and the
episode ending with ``agents == []`` instead of an automatic reset.
"""

from __future__ import annotations

from typing import Any

import gymnasium
import numpy as np
import torch
from gymnasium.spaces import Box
from marl_envs.torch_mpe.env import TorchMPEEnv
from pettingzoo import ParallelEnv


class TorchMPEParallelEnv(ParallelEnv):
    """One copy (``num_envs == 1``) of a :class:`TorchMPEEnv` behind the ParallelEnv API.

    Args:
        env: the batched env to view; it must hold exactly one copy.
    """

    def __init__(self, env: TorchMPEEnv) -> None:
        if env.num_envs != 1:
            raise ValueError(f"a ParallelEnv view needs an env of one copy, got num_envs="
                             f"{env.num_envs}; build the task with num_envs=1.")
        self.env = env
        self.metadata = {"name": env.scenario.name, "render_modes": [], "is_parallelizable": True}
        self.render_mode = None
        self.possible_agents = list(env.scenario.agents)
        self.agents: list[str] = []
        self._group_of = {agent: (name, slot) for name, spec in env.groups.items()
                          for slot, agent in enumerate(spec.agents)}
        size = env.state_shape[0] if env.state_shape is not None else sum(
            spec.num_agents * spec.obs_shape[0] for spec in env.groups.values())
        # One space object per agent, as the API asks (seeding a space must stick).
        self._observation_spaces = {
            agent: Box(-np.inf, np.inf, env.groups[name].obs_shape, dtype=np.float32)
            for agent, (name, _) in self._group_of.items()}
        self.state_space = Box(-np.inf, np.inf, (size,), dtype=np.float32)
        self._last_obs: dict[str, torch.Tensor] = {}

    @property
    def max_cycles(self) -> int:
        """Episode length in steps."""
        return self.env.max_cycles

    @max_cycles.setter
    def max_cycles(self, value: int) -> None:
        self.env.max_cycles = value

    def observation_space(self, agent: str) -> gymnasium.Space:
        return self._observation_spaces[agent]

    def action_space(self, agent: str) -> gymnasium.Space:
        return self.env.groups[self._group_of[agent][0]].action_space

    def reset(self, seed: int | None = None, options: dict[str, Any] | None = None
              ) -> tuple[dict[str, np.ndarray], dict[str, dict[str, Any]]]:
        first = self.env.reset(seed=seed)
        self._last_obs = {name: group.obs for name, group in first.groups.items()}
        self.agents = self.possible_agents[:]
        return self._per_agent(self._last_obs), {agent: {} for agent in self.agents}

    def step(self, actions: dict[str, Any]) -> tuple[
            dict[str, np.ndarray], dict[str, float], dict[str, bool], dict[str, bool],
            dict[str, dict[str, Any]]]:
        if not self.agents:
            raise RuntimeError("step() after the episode ended; call reset() first.")
        missing = [agent for agent in self.agents if agent not in actions]
        if missing:
            raise ValueError(f"no action for agents {missing}; every agent acts at every step.")
        transition = self.env.advance(self._batched_actions(actions))
        self._last_obs = transition.obs
        observations = self._per_agent(transition.obs)
        rewards = dict(zip(self.possible_agents, transition.reward[0].tolist(), strict=True))
        terminations = {agent: False for agent in self.agents}
        truncations = {agent: transition.truncated for agent in self.agents}
        infos: dict[str, dict[str, Any]] = {agent: {} for agent in self.agents}
        if transition.truncated:
            self.agents = []
        return observations, rewards, terminations, truncations, infos

    def state(self) -> np.ndarray:
        """Every agent's observation, concatenated in agent order (as ``mpe2``)."""
        return np.concatenate([obs[0].flatten().cpu().numpy().astype(np.float32)
                               for obs in self._last_obs.values()])

    def close(self) -> None:
        self.env.close()

    def _per_agent(self, obs: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
        out = {}
        for agent in self.possible_agents:
            name, slot = self._group_of[agent]
            out[agent] = obs[name][0, slot].cpu().numpy().astype(np.float32)
        return out

    def _batched_actions(self, actions: dict[str, Any]) -> dict[str, torch.Tensor]:
        batched = {}
        for name, spec in self.env.groups.items():
            values = [np.asarray(actions[agent]) for agent in spec.agents]
            batched[name] = torch.as_tensor(np.stack(values)).unsqueeze(0)
        return batched
