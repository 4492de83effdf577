"""PettingZoo env factories for tests, importable as ``toy_factories:<name>`` tasks."""

from __future__ import annotations

from typing import Any

import numpy as np
from marl_envs.tasks.coop_match import CoopMatchEnv
from marl_envs.tasks.endless import EndlessEnv
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
