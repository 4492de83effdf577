"""Wrappers for PettingZoo ParallelEnvs."""

from __future__ import annotations

from typing import Any

from pettingzoo import ParallelEnv
from pettingzoo.utils.wrappers import BaseParallelWrapper


class TimeLimit(BaseParallelWrapper):
    """Truncate every episode after ``max_episode_steps`` parallel steps.

    At the last step every agent still in the episode (including one that entered in
    that step) is marked ``truncated=True`` and the agent list empties. Agents that
    terminated in that same step stay terminated and are not marked truncated: a time
    limit is a truncation, never a termination (so learners bootstrap from the final
    observation instead of treating it as terminal). The wrapped env's own limits, if
    any, still apply.
    """

    def __init__(self, env: ParallelEnv, max_episode_steps: int) -> None:
        if not isinstance(max_episode_steps, int) or max_episode_steps < 1:
            raise ValueError(
                f"max_episode_steps must be a positive int, got {max_episode_steps!r}."
            )
        super().__init__(env)
        self.max_episode_steps = max_episode_steps
        self._elapsed_steps = 0
        self._time_is_up = False

    @property
    def agents(self) -> list[Any]:
        """The wrapped env's agents, or none once the time limit has been reached."""
        return [] if self._time_is_up else self.env.agents

    def reset(
        self, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[Any, Any], dict[Any, dict[str, Any]]]:
        self._elapsed_steps = 0
        self._time_is_up = False
        return self.env.reset(seed=seed, options=options)

    def step(
        self, actions: dict[Any, Any]
    ) -> tuple[
        dict[Any, Any],
        dict[Any, float],
        dict[Any, bool],
        dict[Any, bool],
        dict[Any, dict[str, Any]],
    ]:
        acting = list(self.env.agents)
        observations, rewards, terminations, truncations, infos = self.env.step(actions)
        self._elapsed_steps += 1
        if self._elapsed_steps < self.max_episode_steps:
            return observations, rewards, terminations, truncations, infos
        # Copies: envs may return their internal dicts, which must not be edited.
        rewards, terminations, truncations = dict(rewards), dict(terminations), dict(truncations)
        for agent in dict.fromkeys([*acting, *self.env.agents]):
            if not terminations.get(agent, False):
                truncations[agent] = True
            terminations.setdefault(agent, False)
            rewards.setdefault(agent, 0.0)
        self._time_is_up = True
        return observations, rewards, terminations, truncations, infos

    def __str__(self) -> str:
        return f"TimeLimit<{self.env}, {self.max_episode_steps}>"
