"""Wrappers for PettingZoo ParallelEnvs."""

from __future__ import annotations

from typing import Any

from pettingzoo import ParallelEnv
from pettingzoo.utils.wrappers import BaseParallelWrapper

ParallelStep = tuple[
    dict[Any, Any], dict[Any, float], dict[Any, bool], dict[Any, bool], dict[Any, dict[str, Any]]
]
"""What ``ParallelEnv.step`` returns: observations, rewards, terminations, truncations, infos."""


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
    ) -> ParallelStep:
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


class ActionRepeat(BaseParallelWrapper):
    """Repeat each decision for up to ``num_repeats`` steps of the wrapped env.

    One call of :meth:`step` steps the wrapped env with the same actions until
    ``num_repeats`` steps have passed or an agent terminated, was truncated or entered the
    episode (so every such event is seen at a decision, with the observation it came
    with). Each agent's rewards over the repeated steps are summed; observations and infos
    are those of the last step in which the agent took part. A time limit on the wrapped
    env (:class:`TimeLimit`) therefore counts env steps, not decisions.
    """

    def __init__(self, env: ParallelEnv, num_repeats: int) -> None:
        if isinstance(num_repeats, bool) or not isinstance(num_repeats, int) or num_repeats < 1:
            raise ValueError(
                f"action_repeat must be a positive int (1 = every step is a decision), got "
                f"{num_repeats!r}."
            )
        super().__init__(env)
        self.num_repeats = num_repeats

    def step(
        self, actions: dict[Any, Any]
    ) -> ParallelStep:
        acting = set(self.env.agents)
        observations: dict[Any, Any] = {}
        rewards: dict[Any, float] = {}
        terminations: dict[Any, bool] = {}
        truncations: dict[Any, bool] = {}
        infos: dict[Any, dict[str, Any]] = {}
        for _ in range(self.num_repeats):
            present = {agent: actions[agent] for agent in self.env.agents if agent in actions}
            step_obs, step_rewards, step_terms, step_truncs, step_infos = self.env.step(present)
            observations.update(step_obs)
            infos.update(step_infos)
            for agent, reward in step_rewards.items():
                rewards[agent] = rewards.get(agent, 0.0) + float(reward)
            terminations.update(step_terms)
            truncations.update(step_truncs)
            ended = any(step_terms.values()) or any(step_truncs.values())
            entered = not set(self.env.agents) <= acting
            if ended or entered or not self.env.agents:
                break
        return observations, rewards, terminations, truncations, infos

    def __str__(self) -> str:
        return f"ActionRepeat<{self.env}, {self.num_repeats}>"
