"""``toy/hidden_roles``: agents that look alike but are rewarded for different actions.

Each of ``num_agents`` agents holds one of ``num_roles`` roles, and an agent of role ``r``
earns reward 1 for action ``r`` and 0 for any other of the ``num_actions`` actions. The
roles are assigned by a hidden permutation drawn from ``role_seed`` (balanced: role
``r`` goes to ``num_agents // num_roles`` or one more agents), so neither the agent names
nor the observations reveal them: every agent sees the same observation, the fraction
of the episode elapsed, ``[t / max_steps]``. Rewards are per agent (not a team reward),
so an agent's transitions carry its role. Episodes are truncated after ``max_steps``.

What a policy can reach, per agent and step:

- optimum 1.0: every agent plays its role's action (a shared network with one-hot agent
  IDs, or one network per role, can represent this);
- a single shared network without IDs sees identical inputs for all agents, so every agent
  follows the same action distribution ``p``, earning ``sum_r (n_r / N) p(r)``: at most
  ``max_r n_r / N``, which is ``1 / num_roles`` when ``num_roles`` divides ``num_agents``
  (a uniform random policy earns ``1 / num_actions``).

With ``num_roles = 1`` every agent is alike (all rewarded for action 0): the control case
in which selective sharing should find a single network.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium.spaces import Box, Discrete
from marl_envs.tasks.base import SpaceTableEnv
from marl_envs.wrappers import ParallelStep


def hidden_role_assignment(num_agents: int, num_roles: int, role_seed: int) -> np.ndarray:
    """Return ``roles: [num_agents]``: a balanced role per agent, shuffled by ``role_seed``."""
    balanced = np.arange(num_agents) % num_roles
    return np.random.default_rng(role_seed).permutation(balanced)


class HiddenRolesEnv(SpaceTableEnv):
    """Agent ``i`` earns 1 for playing ``roles[i]``; the roles are hidden.

    Args:
        num_agents: number of agents ``agent_0 .. agent_{N-1}``.
        num_roles: number of distinct roles, ``1 <= num_roles <= min(num_agents, num_actions)``.
        num_actions: size of every agent's ``Discrete`` action space.
        max_steps: episode length (truncated).
        role_seed: seed of the hidden permutation from agents to roles.

    Attributes:
        roles: ``[num_agents]`` int64, agent ``i``'s role (for tests and evaluation only;
            never part of an observation).
    """

    def __init__(
        self,
        num_agents: int = 6,
        num_roles: int = 3,
        num_actions: int = 3,
        max_steps: int = 5,
        role_seed: int = 0,
    ) -> None:
        if not (1 <= num_roles <= min(num_agents, num_actions) and max_steps >= 1):
            raise ValueError(
                "need 1 <= num_roles <= min(num_agents, num_actions) and max_steps >= 1, got "
                f"num_roles={num_roles}, num_agents={num_agents}, num_actions={num_actions}, "
                f"max_steps={max_steps}."
            )
        self._set_agents("hidden_roles_v0", num_agents,
                         lambda: Box(0.0, 1.0, shape=(1,), dtype=np.float32),
                         lambda: Discrete(num_actions))
        self.max_steps = max_steps
        self.roles = hidden_role_assignment(num_agents, num_roles, role_seed)
        self._steps = 0

    def reset(
        self, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, dict[str, Any]]]:
        # Nothing is random within an episode; the seed is accepted for the API's sake.
        self.agents = list(self.possible_agents)
        self._steps = 0
        return self._observations(), {agent: {} for agent in self.agents}

    def step(self, actions: dict[str, Any]) -> ParallelStep:
        role_of = dict(zip(self.possible_agents, self.roles, strict=True))
        rewards = {
            agent: float(actions.get(agent) == role_of[agent]) for agent in self.agents
        }
        self._steps += 1
        time_is_up = self._steps >= self.max_steps
        return self._finish_step(self._observations(), rewards, False, time_is_up)

    def render(self) -> None:
        return None

    def _observations(self) -> dict[str, np.ndarray]:
        elapsed = np.array([self._steps / self.max_steps], dtype=np.float32)
        return {agent: elapsed.copy() for agent in self.agents}
