"""What the toy tasks share: spaces looked up in per-agent tables."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gymnasium.spaces import Space
from marl_envs.wrappers import ParallelStep
from pettingzoo import ParallelEnv


class SpaceTableEnv(ParallelEnv):
    """A ParallelEnv whose ``__init__`` fills ``observation_spaces`` and ``action_spaces``
    (dicts by agent name); the per-agent accessors PettingZoo asks for read them."""

    observation_spaces: dict[str, Space]
    action_spaces: dict[str, Space]

    def observation_space(self, agent: str) -> Space:
        return self.observation_spaces[agent]

    def action_space(self, agent: str) -> Space:
        return self.action_spaces[agent]

    def _set_agents(self, name: str, num_agents: int, observation_space: Callable[[], Space],
                    action_space: Callable[[], Space]) -> None:
        """``num_agents`` agents ``agent_0 ..`` with the same kind of spaces; each agent
        gets its own space objects (their sampling RNGs stay apart)."""
        self.metadata = {"name": name, "render_modes": [], "is_parallelizable": True}
        self.possible_agents = [f"agent_{index}" for index in range(num_agents)]
        self.agents: list[str] = []
        self.observation_spaces = {agent: observation_space() for agent in self.possible_agents}
        self.action_spaces = {agent: action_space() for agent in self.possible_agents}

    def _finish_step(self, observations: dict[str, Any], rewards: dict[str, float],
                     terminated: bool, truncated: bool) -> ParallelStep:
        """The step's five dicts, every live agent ending together; the episode's agents
        are cleared when it ends."""
        terminations = dict.fromkeys(self.agents, terminated)
        truncations = dict.fromkeys(self.agents, truncated)
        infos: dict[str, dict[str, Any]] = {agent: {} for agent in self.agents}
        if terminated or truncated:
            self.agents = []
        return observations, rewards, terminations, truncations, infos
