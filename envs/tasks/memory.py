"""``toy/memory``: remember a cue over a delay, report it at the query step.

At the first step every agent sees a cue, one of ``k`` symbols (one-hot; drawn uniformly,
independently per agent, or one cue for all agents with ``shared_cue``). Then come
``delay`` blank steps and a query step. Observations are ``[cue one-hot (k) | query flag
(1)]``: the cue at the first step only, the flag at the query step only, zeros in between.
Agents pick one of ``k`` actions every step; only the answer at the query step counts: an
agent earns 1 if it names its own cue, else 0 (with ``team_reward`` every agent earns the
fraction of agents that answered right). All agents then terminate: an episode is
``delay + 2`` steps, and never truncates.

Returns per agent and episode:

- optimum **1.0**: answer the remembered cue;
- chance **1/k**: the best any memoryless policy can expect. The query observation is the
  same whatever the cue, so such a policy's answer is independent of the cue, and against
  a uniform cue any answer distribution is right with probability ``1/k``. A recurrent
  policy can carry the cue through the blank steps and reach the optimum.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium.spaces import Box, Discrete
from marl_envs.tasks.base import SpaceTableEnv
from marl_envs.wrappers import ParallelStep


class MemoryEnv(SpaceTableEnv):
    """Name the cue seen ``delay + 1`` steps ago; reward only at the query step.

    Args:
        num_agents: number of agents ``agent_0 .. agent_{N-1}``.
        num_cues: number of cues and of actions ``k``.
        delay: blank steps between the cue and the query.
        shared_cue: one cue for all agents instead of one each.
        team_reward: every agent earns the fraction of right answers instead of its own.
    """

    def __init__(self, num_agents: int = 2, num_cues: int = 4, delay: int = 3,
                 shared_cue: bool = False, team_reward: bool = False) -> None:
        if num_agents < 1 or num_cues < 2 or delay < 0:
            raise ValueError(
                "need num_agents >= 1, num_cues >= 2 and delay >= 0, got "
                f"{num_agents}, {num_cues}, {delay}."
            )
        self._set_agents("memory_v0", num_agents,
                         lambda: Box(0.0, 1.0, shape=(num_cues + 1,), dtype=np.float32),
                         lambda: Discrete(num_cues))
        self.num_cues = num_cues
        self.delay = delay
        self.shared_cue = shared_cue
        self.team_reward = team_reward
        self._rng = np.random.default_rng()
        self.cues = np.zeros(num_agents, dtype=np.int64)  # [N], each agent's cue
        self.time = 0  # steps taken in this episode; delay + 1 at the query step

    def reset(
        self, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, dict[str, Any]]]:
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        self.agents = list(self.possible_agents)
        self.time = 0
        count = 1 if self.shared_cue else len(self.possible_agents)
        drawn = self._rng.integers(self.num_cues, size=count)
        self.cues = np.broadcast_to(drawn, (len(self.possible_agents),)).copy()
        return self._observations(), {agent: {} for agent in self.agents}

    def step(self, actions: dict[str, Any]) -> ParallelStep:
        is_query = self.time == self.delay + 1
        right = np.array([
            is_query and int(actions[agent]) == self.cues[index]
            for index, agent in enumerate(self.agents)
        ], dtype=np.float32)
        if self.team_reward:
            right[:] = right.mean()
        self.time += 1
        observations = self._observations()
        rewards = {agent: float(right[index]) for index, agent in enumerate(self.agents)}
        return self._finish_step(observations, rewards, is_query, False)

    def state(self) -> np.ndarray:
        """``[N * k + 1]``: every agent's one-hot cue, then ``time / (delay + 1)``."""
        cues = np.eye(self.num_cues, dtype=np.float32)[self.cues].reshape(-1)
        return np.append(cues, np.float32(self.time / (self.delay + 1)))

    def render(self) -> None:
        return None

    def _observations(self) -> dict[str, np.ndarray]:
        """The cue at time 0, the flag at the query time, zeros otherwise (and after it)."""
        observation = np.zeros((len(self.possible_agents), self.num_cues + 1), np.float32)
        if self.time == 0:
            observation[np.arange(len(self.possible_agents)), self.cues] = 1.0
        elif self.time == self.delay + 1:
            observation[:, -1] = 1.0
        return {agent: observation[index] for index, agent in enumerate(self.agents)}
