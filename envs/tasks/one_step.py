"""One-step cooperative games for value-factorisation and actor-critic tests.

``toy/matrix_game``: two agents pick one of ``n`` actions each and share the payoff of
the joint action; the episode then terminates. Named payoffs are the classic games where
independent and additive learners miscoordinate (Claus and Boutilier 1998):

- ``climbing``: ``[[11, -30, 0], [-30, 7, 6], [0, 0, 5]]``; optimum 11 at (0, 0), which
  a learner averaging over its partner's actions rates below the safe row ``2``;
- ``penalty``: ``[[10, 0, -10], [0, 2, 0], [-10, 0, 10]]``; optimum 10 at (0, 0) or
  (2, 2), each next to a -10 miscoordination.

``toy/reach``: continuous actions. Every agent sees its own target point in ``[-1, 1]^d``
and the team earns ``-mean_i ||a_i - t_i||^2``; the episode then terminates. Uniform
random actions earn ``-2d/3`` on average, the optimal policy 0.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium.spaces import Box, Discrete
from marl_envs.tasks.base import SpaceTableEnv
from marl_envs.wrappers import ParallelStep

PAYOFFS: dict[str, list[list[float]]] = {
    "climbing": [[11.0, -30.0, 0.0], [-30.0, 7.0, 6.0], [0.0, 0.0, 5.0]],
    "penalty": [[10.0, 0.0, -10.0], [0.0, 2.0, 0.0], [-10.0, 0.0, 10.0]],
}



def _end_episode(env: MatrixGameEnv | ReachEnv, reward: float) -> ParallelStep:
    """The one step of a one-step game: every agent gets ``reward`` and terminates."""
    observations = env._observations()
    rewards = dict.fromkeys(env.agents, reward)
    terminations = dict.fromkeys(env.agents, True)
    truncations = dict.fromkeys(env.agents, False)
    infos: dict[str, dict[str, Any]] = {a: {} for a in env.agents}
    env.agents = []
    return observations, rewards, terminations, truncations, infos


class MatrixGameEnv(SpaceTableEnv):
    """A two-player one-step cooperative matrix game with a constant observation.

    Args:
        payoff: a name in :data:`PAYOFFS` or an ``n x n`` payoff matrix (rows: agent 0).
    """

    def __init__(self, payoff: str | list[list[float]] = "climbing") -> None:
        if isinstance(payoff, str):
            if payoff not in PAYOFFS:
                raise ValueError(f"payoff must be one of {', '.join(PAYOFFS)} or an n x n "
                                 f"matrix; got {payoff!r}")
            payoff = PAYOFFS[payoff]
        matrix = np.asarray(payoff, dtype=np.float32)
        if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1] or matrix.shape[0] < 2:
            raise ValueError(f"payoff must be a square matrix of at least 2 x 2; got shape "
                             f"{list(matrix.shape)}")
        self.payoff = matrix
        self.metadata = {"name": "matrix_game_v0", "render_modes": [], "is_parallelizable": True}
        self.possible_agents = ["agent_0", "agent_1"]
        self.agents: list[str] = []
        size = matrix.shape[0]
        self.observation_spaces = {a: Box(0.0, 1.0, shape=(1,), dtype=np.float32)
                                   for a in self.possible_agents}
        self.action_spaces = {a: Discrete(size) for a in self.possible_agents}

    def reset(self, seed: int | None = None, options: dict[str, Any] | None = None
              ) -> tuple[dict[str, np.ndarray], dict[str, dict[str, Any]]]:
        self.agents = list(self.possible_agents)
        return self._observations(), {a: {} for a in self.agents}

    def step(self, actions: dict[str, Any]) -> ParallelStep:
        reward = float(self.payoff[int(actions["agent_0"]), int(actions["agent_1"])])
        return _end_episode(self, reward)

    def state(self) -> np.ndarray:
        """``[1]``: the game has one state."""
        return np.ones(1, dtype=np.float32)

    def render(self) -> None:
        return None

    def _observations(self) -> dict[str, np.ndarray]:
        return {a: np.ones(1, dtype=np.float32) for a in self.possible_agents}


class ReachEnv(SpaceTableEnv):
    """Each agent moves its action onto its own target point; one step; team reward.

    Args:
        num_agents: number of agents ``agent_0 .. agent_{N-1}``.
        dim: dimension ``d`` of targets and actions.
    """

    def __init__(self, num_agents: int = 2, dim: int = 2) -> None:
        if num_agents < 1 or dim < 1:
            raise ValueError(f"need num_agents >= 1 and dim >= 1; got {num_agents}, {dim}")
        self.metadata = {"name": "reach_v0", "render_modes": [], "is_parallelizable": True}
        self.possible_agents = [f"agent_{index}" for index in range(num_agents)]
        self.agents: list[str] = []
        self.dim = dim
        self.observation_spaces = {a: Box(-1.0, 1.0, shape=(dim,), dtype=np.float32)
                                   for a in self.possible_agents}
        self.action_spaces = {a: Box(-1.0, 1.0, shape=(dim,), dtype=np.float32)
                              for a in self.possible_agents}
        self._rng = np.random.default_rng()
        self._targets = np.zeros((num_agents, dim), dtype=np.float32)

    def reset(self, seed: int | None = None, options: dict[str, Any] | None = None
              ) -> tuple[dict[str, np.ndarray], dict[str, dict[str, Any]]]:
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        self.agents = list(self.possible_agents)
        self._targets = self._rng.uniform(-1.0, 1.0, self._targets.shape).astype(np.float32)
        return self._observations(), {a: {} for a in self.agents}

    def step(self, actions: dict[str, Any]) -> ParallelStep:
        chosen = np.stack([np.asarray(actions[a], dtype=np.float32)
                           for a in self.possible_agents])
        reward = -float(((chosen - self._targets) ** 2).sum(-1).mean())
        return _end_episode(self, reward)

    def state(self) -> np.ndarray:
        """``[N * d]``: every agent's target, concatenated."""
        return self._targets.reshape(-1).copy()

    def render(self) -> None:
        return None

    def _observations(self) -> dict[str, np.ndarray]:
        return {a: self._targets[index].copy() for index, a in enumerate(self.possible_agents)}
