"""What the toy tasks share: spaces looked up in per-agent tables."""

from __future__ import annotations

from gymnasium.spaces import Space
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
