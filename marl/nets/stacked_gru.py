"""The ``batched`` form of independent recurrent networks: every agent's weights stacked.

:class:`StackedGRUAgents` holds ``A`` :class:`~marl.nets._gru.GRUAgent` networks as
``[A, ...]`` tensors: the trunk and head are :class:`~marl.nets.independent.StackedMLP`,
the GRU a :class:`StackedGRUCell`. Each call (a trunk layer, the input half of the GRU over
all steps, the recurrent half of one step, the head) is one ``baddbmm`` for all agents.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from marl.nets._gru import GRUAgent, gru_scan
from marl.nets.independent import StackedMLP
from marl.nets.mlp import ACTIVATION_FUNCTIONS


class StackedGRUCell(nn.Module):
    """``A`` GRU cells as stacked tensors; the gates of all agents in one call per step.

    Holds ``weight_ih: [A, I, 3H]``, ``weight_hh: [A, H, 3H]`` (each agent's
    ``nn.GRUCell`` weights transposed, so ``baddbmm`` needs no transpose at run time) and
    ``bias_ih``, ``bias_hh: [A, 1, 3H]`` (the singleton broadcasts over rows).
    """

    _NAMES = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
    weight_ih: Tensor
    weight_hh: Tensor
    bias_ih: Tensor
    bias_hh: Tensor

    def __init__(self, cells: Sequence[nn.GRUCell]) -> None:
        """Stack the weights of ``cells`` (one per agent, equal sizes); copies them."""
        super().__init__()
        self.hidden_size = cells[0].hidden_size
        with torch.no_grad():
            for name in self._NAMES:
                per_agent = [getattr(cell, name) for cell in cells]
                # Weights [3H, in] -> [in, 3H]; biases [3H] -> [1, 3H].
                shaped = [p.T if name.startswith("weight") else p.unsqueeze(0) for p in per_agent]
                self.register_parameter(name, nn.Parameter(torch.stack(shaped)))

    def input_gates(self, x: Tensor) -> Tensor:
        """``W_i x + b_i`` for every agent: ``x: [A, M, I] -> [A, M, 3H]``."""
        return torch.baddbmm(self.bias_ih, x, self.weight_ih)

    def scan(self, gates_in: Tensor, hidden: Tensor, keep: Tensor, alive: Tensor | None) -> Tensor:
        """Run the recurrence, see :func:`~marl.nets._gru.gru_scan` (``G = A``).

        Args:
            gates_in: ``[A, T, N, 3H]`` from :meth:`input_gates`.
            hidden: ``[A, N, H]``.
            keep: ``[A, T, N, 1]``, 0.0 where the state is zeroed before the step.
            alive: ``[A, T, N, 1]`` bool or ``None``.

        Returns:
            ``[A, T, N, H]``, the state after each step.
        """
        return gru_scan(gates_in, hidden, keep, alive, self.weight_hh, self.bias_hh)

    def agent_state(self, agent: int) -> dict[str, Tensor]:
        """Agent ``agent``'s weights as an ``nn.GRUCell`` state dict (views, not copies)."""
        state: dict[str, Tensor] = {}
        for name in self._NAMES:
            stacked = getattr(self, name)
            state[name] = stacked[agent].T if name.startswith("weight") else stacked[agent, 0]
        return state

    def extra_repr(self) -> str:
        return f"weight_ih={list(self.weight_ih.shape)}, weight_hh={list(self.weight_hh.shape)}"


class StackedGRUAgents(nn.Module):
    """``A`` :class:`GRUAgent` networks as stacked tensors: ``[A, T, N, F] -> [A, T, N, O]``.

    Attributes:
        trunk: :class:`StackedMLP` of the input layers (no layers when ``hidden`` is empty).
        gru: :class:`StackedGRUCell`.
        head: :class:`StackedMLP` of the one-layer head.
    """

    def __init__(self, agents: Sequence[GRUAgent], activation: str) -> None:
        """Stack the weights of ``agents`` (equal sizes); copies them."""
        super().__init__()
        self.trunk = StackedMLP([agent.trunk for agent in agents], activation)
        self.gru = StackedGRUCell([agent.gru for agent in agents])
        self.head = StackedMLP([agent.head for agent in agents], activation)
        # StackedMLP leaves the activation off its last layer; the trunk ends with one.
        self._trunk_act = ACTIVATION_FUNCTIONS[activation] if self.trunk.layer_names else None

    def forward(
        self, obs: Tensor, hidden: Tensor, keep: Tensor, alive: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        """Run every agent's network on its own slice, all agents in each call.

        Args:
            obs: ``[A, T, N, F]``; hidden: ``[A, N, H]``; keep: ``[A, T, N, 1]`` (0.0 where
            the state is zeroed); alive: ``[A, T, N, 1]`` bool or ``None``.

        Returns:
            ``out: [A, T, N, O]`` and ``states: [A, T, N, H]``, the state after each step.
        """
        gates_in = self.input_gates(obs)
        states = self.gru.scan(gates_in, hidden, keep, alive)
        return self.heads(states), states

    def input_gates(self, obs: Tensor) -> Tensor:
        """The trunk and the input half of every agent's GRU: ``[A, T, N, F] -> [A, T, N,
        3H]``, one call per layer for all agents and steps."""
        agents, steps, rows, features = obs.shape
        x = self.trunk(obs.reshape(agents, steps * rows, features))
        if self._trunk_act is not None:
            x = self._trunk_act(x)
        return self.gru.input_gates(x).reshape(agents, steps, rows, -1)

    def heads(self, states: Tensor) -> Tensor:
        """Every agent's head on its states: ``[A, T, N, H] -> [A, T, N, O]``."""
        agents, steps, rows = states.shape[:3]
        return self.head(states.reshape(agents, steps * rows, -1)).reshape(
            agents, steps, rows, -1)

    def agent_state(self, agent: int) -> dict[str, Tensor]:
        """Agent ``agent``'s weights as a :class:`GRUAgent` state dict (views, not copies)."""
        parts: dict[str, StackedMLP | StackedGRUCell] = {
            "trunk": self.trunk, "gru": self.gru, "head": self.head
        }
        return {
            f"{prefix}.{key}": value
            for prefix, part in parts.items()
            for key, value in part.agent_state(agent).items()
        }
