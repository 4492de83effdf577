"""Recurrent state over env copies: hidden states per group and network, episode starts.

A learner with recurrent networks (``groups.rnn=gru``) keeps one :class:`AgentMemory` for
its training env copies and makes one per evaluation. It holds, per group and per
recurrent network of the group (``"actor"``, ``"critic"``, ``"q"``), the hidden state
``[E, A, H]`` before the next step, and it knows which agents take their first step of an
episode at the observation about to be acted on:

- every agent alive at a reset, or at the auto-reset of its copy (``env_done``);
- an agent that enters late (alive now, not alive at the previous step of its copy);
- an agent alive again after its own termination or truncation.

The networks zero the state where ``first`` is true and leave it unchanged where an agent
is not alive (:mod:`marl.nets.recurrent`); the memory only keeps the tensors. For learners
without recurrent networks it holds nothing and costs nothing.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from marl_envs.core import BatchedReset, BatchedStep


class AgentMemory:
    """Hidden states ``[E, A, H]`` of every recurrent network, and episode starts.

    Args:
        sizes: per group, per network name, ``(num_agents, hidden_size)``; groups or
            networks left out are feed-forward.
        num_envs: env copies ``E``.
        device: where the states live.
    """

    def __init__(self, sizes: Mapping[str, Mapping[str, tuple[int, int]]], num_envs: int,
                 device: torch.device) -> None:
        self.num_envs = num_envs
        self.device = device
        self.hidden: dict[str, dict[str, torch.Tensor]] = {
            group: {net: torch.zeros(num_envs, agents, size, device=device)
                    for net, (agents, size) in nets.items()}
            for group, nets in sizes.items() if nets}
        self._agents = {group: next(iter(nets.values()))[0]
                        for group, nets in sizes.items() if nets}
        self._prev_alive = {group: torch.zeros(num_envs, count, dtype=torch.bool, device=device)
                            for group, count in self._agents.items()}
        self._ended = {group: torch.ones(num_envs, count, dtype=torch.bool, device=device)
                       for group, count in self._agents.items()}

    @property
    def recurrent(self) -> bool:
        """Whether any network keeps a state."""
        return bool(self.hidden)

    def reset(self) -> None:
        """New episodes in every copy: states zeroed, every agent alive next is ``first``."""
        for nets in self.hidden.values():
            for state in nets.values():
                state.zero_()
        for group in self._agents:
            self._prev_alive[group].zero_()
            self._ended[group].fill_(True)

    def first(self, current: BatchedReset) -> dict[str, torch.Tensor]:
        """Per recurrent group, ``[E, A]`` bool: the agents whose first step of an episode
        is ``current``. Call once per step, before acting on ``current``."""
        starts = {}
        for group in self._agents:
            alive = current.groups[group].alive.to(self.device)
            starts[group] = alive & (self._ended[group] | ~self._prev_alive[group])
            self._prev_alive[group] = alive
        return starts

    def observe(self, step: BatchedStep) -> None:
        """Record the episode ends of ``step`` (copies that auto-reset, agents that ended),
        so :meth:`first` marks the next episode's first steps."""
        if not self._agents:
            return
        done = step.env_done.to(self.device).unsqueeze(-1)
        for group in self._agents:
            result = step.groups[group]
            ended = result.terminated.to(self.device) | result.truncated.to(self.device)
            self._ended[group] = ended | done

    def state(self, group: str, net: str) -> torch.Tensor:
        """The hidden state ``[E, A, H]`` of network ``net`` of ``group``."""
        return self.hidden[group][net]

    def set_state(self, group: str, net: str, value: torch.Tensor) -> None:
        """Replace the hidden state of network ``net`` of ``group`` (``[E, A, H]``)."""
        self.hidden[group][net] = value
