"""``toy/leave_early``: agents that leave the episode at different steps.

Agent ``agent_i`` terminates at step ``i + 1`` (steps count from 1) and gets reward
``i + 1`` on that final step and 0.1 on every step before. The episode ends when every
agent has left, at step ``num_agents``. With ``late_agent=True`` an extra agent
``late_0`` enters at step 2 (it is in the observations returned by step 2, reward 0
there), acts at step 3 and terminates there with reward 0.5; it enters only if a
regular agent is still present after step 2 (``num_agents >= 3``).

Observations are ``[step, agent number, 1.0]`` (``late_0`` has number ``num_agents``),
so a zero observation is never a real one.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium.spaces import Box, Discrete
from marl_envs.tasks.base import SpaceTableEnv
from marl_envs.wrappers import ParallelStep

LATE_AGENT = "late_0"
LATE_ENTRY_STEP = 2
LATE_REWARD = 0.5
STEP_REWARD = 0.1


class LeaveEarlyEnv(SpaceTableEnv):
    """Agent ``i`` terminates after ``i + 1`` steps; optionally one agent enters late.

    Args:
        num_agents: number of regular agents ``agent_0 .. agent_{N-1}``.
        late_agent: add ``late_0``, which enters after step 2 and leaves at step 3.
    """

    def __init__(self, num_agents: int = 3, late_agent: bool = False) -> None:
        if num_agents < 1:
            raise ValueError(f"num_agents must be >= 1, got {num_agents}.")
        regular = [f"agent_{index}" for index in range(num_agents)]
        self.metadata = {"name": "leave_early_v0", "render_modes": [], "is_parallelizable": True}
        self.possible_agents = [*regular, LATE_AGENT] if late_agent else regular
        self.agents: list[str] = []
        self._number = {agent: index for index, agent in enumerate(self.possible_agents)}
        self.observation_spaces = {
            agent: Box(0.0, np.inf, shape=(3,), dtype=np.float32) for agent in self.possible_agents
        }
        self.action_spaces = {agent: Discrete(2) for agent in self.possible_agents}
        self._steps = 0

    def reset(
        self, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, dict[str, Any]]]:
        self._steps = 0
        self.agents = [agent for agent in self.possible_agents if agent != LATE_AGENT]
        return self._observations(self.agents), {agent: {} for agent in self.agents}

    def step(
        self, actions: dict[str, Any]
    ) -> ParallelStep:
        self._steps += 1
        acting = list(self.agents)
        leaving = {agent for agent in acting if self._leaves_now(agent)}
        rewards = {agent: self._reward(agent, agent in leaving) for agent in acting}
        remaining = [agent for agent in acting if agent not in leaving]
        entering = self._steps == LATE_ENTRY_STEP and LATE_AGENT in self.possible_agents
        if entering and remaining:
            remaining.append(LATE_AGENT)
            rewards[LATE_AGENT] = 0.0
        reported = list(rewards)
        terminations = {agent: agent in leaving for agent in reported}
        truncations = dict.fromkeys(reported, False)
        infos: dict[str, dict[str, Any]] = {agent: {} for agent in reported}
        self.agents = remaining
        return self._observations(reported), rewards, terminations, truncations, infos

    def state(self) -> np.ndarray:
        """``[1 + len(possible_agents)]``: the step, then 1.0 for every agent present."""
        present = [float(agent in self.agents) for agent in self.possible_agents]
        return np.array([self._steps, *present], dtype=np.float32)

    def render(self) -> None:
        return None

    def _leaves_now(self, agent: str) -> bool:
        if agent == LATE_AGENT:
            return True
        return self._steps == self._number[agent] + 1

    def _reward(self, agent: str, leaving: bool) -> float:
        if not leaving:
            return STEP_REWARD
        return LATE_REWARD if agent == LATE_AGENT else float(self._number[agent] + 1)

    def _observations(self, agents: list[str]) -> dict[str, np.ndarray]:
        return {
            agent: np.array([self._steps, self._number[agent], 1.0], dtype=np.float32)
            for agent in agents
        }
