"""``toy/endless``: an episode that never terminates, only gets truncated.

Every agent sees the same constant observation and gets reward 1.0 every step, whatever
it does. The episode is truncated after ``max_steps`` steps. A critic that bootstraps
from the final observation at truncations learns ``V = 1 / (1 - gamma)``; one that treats
truncations as terminations learns a smaller, time-dependent value it cannot represent
(the observation carries no time), which is what the learner test checks.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium.spaces import Box, Discrete
from marl_envs.tasks.base import SpaceTableEnv
from marl_envs.wrappers import ParallelStep


class EndlessEnv(SpaceTableEnv):
    """Constant observations, reward 1.0 per step, truncated at ``max_steps``.

    Args:
        num_agents: number of agents ``agent_0 .. agent_{N-1}``.
        max_steps: episode length; every agent is truncated at this step.
        obs_size: length of the constant observation vector (all ones).
    """

    def __init__(self, num_agents: int = 2, max_steps: int = 20, obs_size: int = 4) -> None:
        if num_agents < 1 or max_steps < 1 or obs_size < 1:
            raise ValueError(
                "num_agents, max_steps and obs_size must be >= 1, got "
                f"{num_agents}, {max_steps}, {obs_size}."
            )
        self._set_agents("endless_v0", num_agents,
                         lambda: Box(0.0, 1.0, shape=(obs_size,), dtype=np.float32),
                         lambda: Discrete(2))
        self.max_steps = max_steps
        self._observation = np.ones(obs_size, dtype=np.float32)
        self._steps = 0

    def reset(
        self, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, dict[str, Any]]]:
        self.agents = list(self.possible_agents)
        self._steps = 0
        return self._observations(), {agent: {} for agent in self.agents}

    def step(
        self, actions: dict[str, Any]
    ) -> ParallelStep:
        self._steps += 1
        time_is_up = self._steps >= self.max_steps
        observations = self._observations()
        rewards = dict.fromkeys(self.agents, 1.0)
        return self._finish_step(observations, rewards, False, time_is_up)

    def state(self) -> np.ndarray:
        """``[N * obs_size]``: every agent's observation, concatenated."""
        return np.tile(self._observation, len(self.possible_agents))

    def render(self) -> None:
        return None

    def _observations(self) -> dict[str, np.ndarray]:
        return {agent: self._observation.copy() for agent in self.agents}
