"""One agent's weights in and out of a group of independent networks, whatever the backend.

A group of independent networks holds ``num_agents`` copies of one per-agent module (an
``mlp()``, a recurrent agent), either stacked into ``[A, ...]`` tensors (``batched``) or as
separate modules (``fork``, ``loop``). :class:`AgentWeights` gives every such group the same
way to read and write agent ``i``'s weights as a state dict of the per-agent module, and
the canonical stacked form: those state dicts stacked along a new first axis.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol, cast

import torch
from torch import nn


class StackedCore(Protocol):
    """The ``batched`` core of a group: agent ``i``'s weights as views of the stacks."""

    def agent_state(self, agent: int) -> dict[str, torch.Tensor]:
        """Agent ``agent``'s weights as a state dict of the per-agent module (views)."""
        ...


class AgentWeights:
    """Per-agent weight access, mixed into an ``nn.Module`` group of independent networks.

    The group sets, in its ``__init__``:

    - ``num_agents``, ``backend`` (``"batched"``, ``"fork"`` or ``"loop"``);
    - ``core``: for ``batched`` a :class:`StackedCore`; for ``loop`` an ``nn.ModuleList``
      of per-agent modules; for ``fork`` a scripted runner keeping them in ``.nets``;
    - ``_state_shapes``: ``{key: shape}`` of one per-agent module's state dict.

    Attributes:
        agent_module: how messages name the per-agent module (``"mlp()"``).
    """

    num_agents: int
    backend: str
    core: nn.Module
    _state_shapes: dict[str, torch.Size]
    agent_module = "mlp()"

    def per_agent_parameters(self) -> list[list[nn.Parameter]]:
        """Return agent ``i``'s parameters as list ``i``, e.g. for one optimiser per agent.

        Raises:
            RuntimeError: for the ``batched`` backend, whose parameters are shared tensors.
        """
        if self.backend == "batched":
            name = type(self).__name__
            raise RuntimeError(
                "per_agent_parameters() needs backend='loop' or backend='fork': the 'batched' "
                "backend stacks all agents' weights into [A, ...] tensors, so no parameter "
                "belongs to a single agent and one optimiser per agent is impossible. "
                f"Build {name}(..., backend='loop') (load_stacked() moves weights "
                "across), or use one optimiser over parameters(): Adam is elementwise, so "
                "without gradient clipping each agent gets the update its own Adam would give."
            )
        return [list(net.parameters()) for net in self._agent_nets()]

    def get_agent_state(self, agent: int) -> dict[str, torch.Tensor]:
        """Return a copy of agent ``agent``'s weights as a state dict of its module.

        The result loads into a freshly built per-agent module (``mlp(in_features, hidden,
        out_features, ...)`` for MLP groups) with ``load_state_dict`` whatever the backend.
        """
        return {key: value.detach().clone() for key, value in self._agent_view(agent).items()}

    def set_agent_state(self, agent: int, state: Mapping[str, torch.Tensor]) -> None:
        """Copy ``state`` (a state dict of one agent's module) into agent ``agent``.

        Raises:
            ValueError: if keys or shapes differ from the module this group was built with.
        """
        target = self._agent_view(agent)
        self._check_state(state, leading=())
        with torch.no_grad():
            for key, value in target.items():
                value.copy_(state[key])

    def export_stacked(self) -> dict[str, torch.Tensor]:
        """Return the canonical weights: every agent's module state stacked, ``[A, ...]``.

        Keys are those of one agent's state dict (``"0.weight": [A, out, in]``,
        ``"0.bias": [A, out]``, ...), whatever the backend; the tensors are copies.
        """
        states = [self.get_agent_state(agent) for agent in range(self.num_agents)]
        return {key: torch.stack([state[key] for state in states]) for key in states[0]}

    def load_stacked(self, stacked: Mapping[str, torch.Tensor]) -> None:
        """Load canonical weights from :meth:`export_stacked` (of any backend).

        Raises:
            ValueError: if keys differ or a tensor is not ``[A, *shape of one agent's]``.
        """
        self._check_state(stacked, leading=(self.num_agents,))
        for agent in range(self.num_agents):
            self.set_agent_state(agent, {key: value[agent] for key, value in stacked.items()})

    def tie_to(self, net: nn.Module) -> None:
        """Give every agent a copy of ``net``'s weights (a per-agent module of the same sizes).

        Afterwards this group computes what ``net`` computes on every agent, e.g. what a
        shared network without agent ID computes; the copies are independent and diverge
        under training.
        """
        state = net.state_dict()
        for agent in range(self.num_agents):
            self.set_agent_state(agent, state)

    def _agent_view(self, agent: int) -> dict[str, torch.Tensor]:
        """Agent ``agent``'s weights, as views into this group's parameters."""
        if not 0 <= agent < self.num_agents:
            raise IndexError(f"agent must be in [0, {self.num_agents}); got {agent}.")
        if self.backend == "batched":
            return cast(StackedCore, self.core).agent_state(agent)
        return dict(self._agent_nets()[agent].state_dict())

    def _agent_nets(self) -> list[nn.Module]:
        """Per-agent modules of the ``loop`` and ``fork`` backends (fetched, not cached,
        so the list stays right after ``copy.deepcopy`` or ``load_state_dict``)."""
        # The scripted runner keeps its agents in `.nets`. Script modules support neither
        # get_submodule nor, after deepcopy, iteration or indexing; named_children always works.
        nets = self.core if self.backend == "loop" else cast(nn.Module, self.core.nets)
        return [net for _, net in nets.named_children()]

    def _check_state(self, state: Mapping[str, torch.Tensor], leading: tuple[int, ...]) -> None:
        """Check keys and shapes of one agent's state (``leading=()``) or a stacked one."""
        if set(state) != set(self._state_shapes):
            raise ValueError(
                f"state keys must be {sorted(self._state_shapes)} (one agent's "
                f"{self.agent_module} state dict, stacked for load_stacked); got {sorted(state)}."
            )
        for key, expected in self._state_shapes.items():
            if state[key].shape != (*leading, *expected):
                raise ValueError(
                    f"state[{key!r}] must have shape {[*leading, *expected]}; "
                    f"got {list(state[key].shape)}."
                )
