"""A hand-made batched env whose observations say where in which episode each copy is."""

from __future__ import annotations

from collections.abc import Sequence

import gymnasium
import torch
from marl_envs.core import BatchedReset, BatchedStep, GroupObs, GroupSpec, GroupStep


def code(copy: int, agent: int, episode: int, t: int) -> float:
    """The first feature of an observation: every digit names one coordinate."""
    return 1000.0 * copy + 100.0 * agent + 10.0 * episode + t + 1.0


class ScriptedBatchedEnv:
    """``E`` copies, one group ``agent`` of ``num_agents``; copy ``e`` truncates after
    ``lengths[e]`` steps and auto-resets.

    Agent ``a`` of copy ``e`` at step ``t`` of episode ``n`` observes
    ``obs_shape``-shaped values ``code(e, a, n, t) + i / 10`` (``i`` the flat index of
    the feature); its reward is ``t``. Agents listed in ``leaves`` (``(copy, agent,
    step)``) terminate at that step of every episode and are not alive after it.
    """

    def __init__(self, lengths: Sequence[int], num_agents: int = 2,
                 obs_shape: tuple[int, ...] = (2,),
                 leaves: Sequence[tuple[int, int, int]] = ()) -> None:
        self.num_envs = len(lengths)
        self.lengths = list(lengths)
        self.num_agents = num_agents
        self.obs_shape = obs_shape
        self.leaves = list(leaves)
        self.groups = {"agent": GroupSpec(
            name="agent", agents=tuple(f"agent_{a}" for a in range(num_agents)),
            obs_shape=obs_shape, obs_mask=torch.ones(num_agents, *obs_shape, dtype=torch.bool),
            action_space=gymnasium.spaces.Discrete(2))}
        self.state_shape = None
        self.device = torch.device("cpu")
        self.t = [0] * self.num_envs
        self.episode = [0] * self.num_envs

    def reset(self, seed: int | None = None) -> BatchedReset:
        self.t = [0] * self.num_envs
        self.episode = [0] * self.num_envs
        return BatchedReset(groups={"agent": GroupObs(self._obs(), self._alive(), None)},
                            state=None)

    def step(self, actions: dict[str, torch.Tensor]) -> BatchedStep:
        before = self._alive()
        self.t = [t + 1 for t in self.t]
        final_obs = self._obs(alive=before)
        after = self._alive()
        terminated = before & ~after
        reward = torch.tensor(self.t, dtype=torch.float32)[:, None] * before
        done = torch.tensor([t == n for t, n in zip(self.t, self.lengths, strict=True)])
        truncated = done[:, None] & after
        for copy in torch.nonzero(done).flatten().tolist():
            self.t[copy] = 0
            self.episode[copy] += 1
        next_obs = GroupObs(self._obs(), self._alive(), None)
        group = GroupStep(reward, terminated, truncated, final_obs, next_obs)
        return BatchedStep({"agent": group}, done, None, None)

    def close(self) -> None:
        pass

    def _alive(self) -> torch.Tensor:
        alive = torch.ones(self.num_envs, self.num_agents, dtype=torch.bool)
        for copy, agent, step in self.leaves:
            if self.t[copy] >= step:
                alive[copy, agent] = False
        return alive

    def _obs(self, alive: torch.Tensor | None = None) -> torch.Tensor:
        """``[E, A, *obs_shape]``; zeros for agents that are not alive (or were not, with
        ``alive`` given: the agents that took part in the step)."""
        alive = self._alive() if alive is None else alive
        features = torch.arange(torch.Size(self.obs_shape).numel()).reshape(self.obs_shape) / 10
        obs = torch.zeros(self.num_envs, self.num_agents, *self.obs_shape)
        for copy in range(self.num_envs):
            for agent in range(self.num_agents):
                if alive[copy, agent]:
                    value = code(copy, agent, self.episode[copy], self.t[copy])
                    obs[copy, agent] = value + features
        return obs
