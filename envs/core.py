"""The batched-env protocol that `marl` consumes.

A batched env runs ``E`` copies of a multi-agent task and returns, per agent group,
tensors whose first two axes are ``[E, A_g]`` (env, agent). Agents that are not in the
episode at a step (they left early, or have not entered yet) keep their slot and are
marked ``alive = False``; their observations are zeros and their rewards are 0.

One call of :meth:`BatchedEnv.step` is one transition for every copy. When every agent of
a copy has terminated or been truncated, the copy is reset automatically: ``obs`` then
holds the first observation of the new episode, while ``final_obs`` keeps the last
observation of the episode that ended, so truncated steps can bootstrap from it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Protocol

import gymnasium
import torch


@dataclass(frozen=True)
class GroupSpec:
    """Static description of one agent group.

    Attributes:
        name: group name, e.g. ``"agent"`` or ``"speaker"``.
        agents: agent names in slot order; slot ``i`` of every ``[E, A_g]`` tensor is
            ``agents[i]``.
        obs_shape: per-agent observation shape after padding (for flat vectors ``(F,)``).
        obs_mask: ``[A_g, *obs_shape]`` bool, True where a feature is real and False
            where it is padding (agents of one group with shorter observations).
        action_space: the action space shared by every agent of the group
            (``gymnasium.spaces.Discrete`` or ``gymnasium.spaces.Box``).
        has_action_mask: whether steps carry ``action_mask`` for this group.
    """

    name: str
    agents: tuple[str, ...]
    obs_shape: tuple[int, ...]
    obs_mask: torch.Tensor
    action_space: gymnasium.spaces.Space
    has_action_mask: bool = False

    @property
    def num_agents(self) -> int:
        return len(self.agents)


class GroupObs(NamedTuple):
    """What the policy of one group sees before acting.

    Attributes:
        obs: ``[E, A_g, *obs_shape]`` float32.
        alive: ``[E, A_g]`` bool, agents that act at this step.
        action_mask: ``[E, A_g, n]`` bool (True = allowed) or None; index ``i`` is the
            action ``start + i`` of a ``Discrete(n, start)`` space. Slots of agents
            that are not alive, or that reported no mask, allow every action; the
            padding actions of an agent with fewer actions than its group's Discrete
            (``AgentSlot.num_actions``) are masked while it is alive.
    """

    obs: torch.Tensor
    alive: torch.Tensor
    action_mask: torch.Tensor | None


class GroupStep(NamedTuple):
    """One transition of one group, for all copies.

    Attributes:
        reward: ``[E, A_g]`` float32, reward of the transition (0 for agents not alive
            before it).
        terminated: ``[E, A_g]`` bool, the agent's episode ended in a terminal state.
        truncated: ``[E, A_g]`` bool, the agent's episode was cut (time limit); it did
            not reach a terminal state and its return should bootstrap from
            ``final_obs``.
        final_obs: ``[E, A_g, *obs_shape]``, the observation returned by this
            transition, before any auto-reset. It equals ``next.obs`` where the copy did
            not reset, except for an agent that left in this transition: ``final_obs``
            keeps its last observation (to bootstrap a truncated agent), ``next.obs``
            is zero.
        next: the observation to act on next (after auto-reset).
    """

    reward: torch.Tensor
    terminated: torch.Tensor
    truncated: torch.Tensor
    final_obs: torch.Tensor
    next: GroupObs


class BatchedStep(NamedTuple):
    """The result of :meth:`BatchedEnv.step`.

    Attributes:
        groups: one :class:`GroupStep` per group, in ``BatchedEnv.groups`` order.
        env_done: ``[E]`` bool, the copy's episode ended in this transition and the copy
            was reset.
        state: ``[E, S]`` global state for the next step (after auto-reset) or None when
            the task has no ``state()``.
        final_state: ``[E, S]`` global state before auto-reset, or None.
    """

    groups: dict[str, GroupStep]
    env_done: torch.Tensor
    state: torch.Tensor | None
    final_state: torch.Tensor | None


class BatchedReset(NamedTuple):
    """The result of :meth:`BatchedEnv.reset`."""

    groups: dict[str, GroupObs]
    state: torch.Tensor | None


class BatchedEnv(Protocol):
    """E copies of a multi-agent task, grouped and batched as tensors."""

    num_envs: int
    groups: dict[str, GroupSpec]
    state_shape: tuple[int, ...] | None
    device: torch.device

    def reset(self, seed: int | None = None) -> BatchedReset:
        """Reset every copy. Copy ``i`` is seeded with ``seed + i`` when a seed is given."""
        ...

    def step(self, actions: dict[str, torch.Tensor]) -> BatchedStep:
        """Step every copy.

        Args:
            actions: per group, ``[E, A_g]`` int64 for ``Discrete`` spaces (the space's
                own values, ``start .. start + n - 1``) or
                ``[E, A_g, *shape]`` float32 for ``Box`` spaces. Entries of agents that
                are not alive are ignored.
        """
        ...

    def close(self) -> None: ...
