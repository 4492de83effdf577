"""``toy/coop_match``: a one-step-credit cooperative task that needs agent identities.

Every step each agent ``i`` sees a one-hot cue ``c_i`` (drawn uniformly from ``k`` cues,
independently per agent and step) and picks one of ``k`` actions. The team reward, the
same for every agent, is the fraction of agents whose action equals ``(c_i + i) % k``.
Agents see only their cue, so a network shared by all agents must use the one-hot agent
ID to succeed. A uniform random policy earns ``1/k`` per step, the optimal one 1.0.
Episodes are truncated after ``max_steps`` steps.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium.spaces import Box, Discrete
from marl_envs.tasks.base import SpaceTableEnv
from marl_envs.wrappers import ParallelStep


class CoopMatchEnv(SpaceTableEnv):
    """Match the action to ``(cue + agent_index) % num_cues``; shared team reward.

    Args:
        num_agents: number of agents ``agent_0 .. agent_{N-1}``.
        num_cues: number of cues and of actions ``k``.
        max_steps: episode length (truncated).
    """

    def __init__(self, num_agents: int = 2, num_cues: int = 3, max_steps: int = 5) -> None:
        if num_agents < 1 or num_cues < 2 or max_steps < 1:
            raise ValueError(
                "need num_agents >= 1, num_cues >= 2 and max_steps >= 1, got "
                f"{num_agents}, {num_cues}, {max_steps}."
            )
        self._set_agents("coop_match_v0", num_agents,
                         lambda: Box(0.0, 1.0, shape=(num_cues,), dtype=np.float32),
                         lambda: Discrete(num_cues))
        self.num_cues = num_cues
        self.max_steps = max_steps
        self._rng = np.random.default_rng()
        self._cues = np.zeros(num_agents, dtype=np.int64)
        self._steps = 0

    def reset(
        self, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, dict[str, Any]]]:
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        self.agents = list(self.possible_agents)
        self._steps = 0
        self._draw_cues()
        return self._observations(), {agent: {} for agent in self.agents}

    def step(
        self, actions: dict[str, Any]
    ) -> ParallelStep:
        targets = (self._cues + np.arange(len(self.possible_agents))) % self.num_cues
        matches = [actions.get(agent) == targets[index] for index, agent in enumerate(self.agents)]
        team_reward = float(np.mean(matches)) if matches else 0.0
        self._steps += 1
        time_is_up = self._steps >= self.max_steps
        self._draw_cues()
        observations = self._observations()
        rewards = dict.fromkeys(self.agents, team_reward)
        return self._finish_step(observations, rewards, False, time_is_up)

    def state(self) -> np.ndarray:
        """``[N * k]``: every agent's one-hot cue, concatenated."""
        return np.eye(self.num_cues, dtype=np.float32)[self._cues].reshape(-1)

    def render(self) -> None:
        return None

    def _draw_cues(self) -> None:
        self._cues = self._rng.integers(self.num_cues, size=len(self.possible_agents))

    def _observations(self) -> dict[str, np.ndarray]:
        one_hot = np.eye(self.num_cues, dtype=np.float32)[self._cues]
        return {agent: one_hot[index] for index, agent in enumerate(self.agents)}
