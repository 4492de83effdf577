"""Shared and independent forms of any per-agent module on ``[*B, A, *obs] -> [*B, A, O]``.

An encoder (a CNN on ``[H, W, C]`` images, an entity encoder on ``[N, F]`` rows, an MLP
trunk on ``[F]``) is first written as one agent's module mapping ``[M, *obs] -> [M, O]``.
This module turns it into a group:

- :class:`SharedEncoder`: one module for all agents; agents are rows of the same call.
- :class:`IndependentEncoders`: one module per agent, run by the ``batched`` backend (a
  stacked core that runs every agent in one call per layer), ``fork`` (TorchScript tasks,
  :class:`~marl.nets._fork.ForkRunner`) or ``loop`` (the reference). Weights move between
  backends through :class:`~marl.nets._agent_weights.AgentWeights`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import cast

import torch
from torch import nn

from marl.nets._agent_weights import AgentWeights
from marl.nets._checks import check_choice, check_positive
from marl.nets._fork import script_fork_runner
from marl.nets.independent import BACKENDS

StackBuilder = Callable[[Sequence[nn.Module]], nn.Module]
"""Builds the ``batched`` core from one module per agent: ``[N, A, *obs] -> [N, A, O]``,
with an ``agent_state(agent)`` method (see :class:`~marl.nets._agent_weights.StackedCore`)."""


def check_encoder_input(
    x: torch.Tensor, num_agents: int, obs_shape: Sequence[int], owner: str
) -> None:
    """Raise ``ValueError`` unless ``x`` is ``[*B, num_agents, *obs_shape]``."""
    tail = (num_agents, *obs_shape)
    if x.dim() >= len(tail) and tuple(x.shape[x.dim() - len(tail):]) == tail:
        return
    raise ValueError(
        f"{owner} expected input of shape [..., {', '.join(map(str, tail))}] "
        f"([*batch, num_agents, *obs_shape]), got {list(x.shape)}. "
        "Keep the agent axis just before the observation axes; do not fold it into the batch."
    )


class SharedEncoder(nn.Module):
    """One per-agent module ``net`` for all agents: ``[*B, A, *obs] -> [*B, A, O]``.

    No agent ID is appended here: in a composed network the ID joins after the encoder.

    Attributes:
        net: the shared module, ``[M, *obs] -> [M, O]``.
    """

    def __init__(
        self, net: nn.Module, obs_shape: Sequence[int], num_agents: int, out_features: int
    ) -> None:
        super().__init__()
        check_positive("num_agents", num_agents)
        self.net = net
        self.obs_shape = tuple(obs_shape)
        self.num_agents = num_agents
        self.out_features = out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Run every agent through ``net``: ``x: [*B, A, *obs] -> [*B, A, O]``."""
        check_encoder_input(x, self.num_agents, self.obs_shape, type(self).__name__)
        batch_shape = x.shape[: x.dim() - len(self.obs_shape) - 1]
        rows = x.reshape(math.prod(batch_shape) * self.num_agents, *self.obs_shape)
        return self.net(rows).reshape(*batch_shape, self.num_agents, self.out_features)

    def per_agent_parameters(self) -> list[list[nn.Parameter]]:
        """One list holding all parameters: shared parameters belong to every agent."""
        return [list(self.parameters())]

    def extra_repr(self) -> str:
        return f"num_agents={self.num_agents}, obs_shape={list(self.obs_shape)}"


class IndependentEncoders(AgentWeights, nn.Module):
    """One module per agent: ``[*B, A, *obs] -> [*B, A, O]``, agent ``i`` sees only its slice.

    Attributes:
        backend: ``"batched"``, ``"fork"`` or ``"loop"``.
        core: the ``stack`` result (``batched``), a scripted fork runner (``fork``) or an
            ``nn.ModuleList`` of the per-agent modules (``loop``); each maps
            ``[N, A, *obs] -> [N, A, O]``.
    """

    def __init__(
        self,
        nets: Sequence[nn.Module],
        obs_shape: Sequence[int],
        out_features: int,
        stack: StackBuilder,
        backend: str = "batched",
        agent_module: str = "encoder",
    ) -> None:
        """Hand ``nets`` (one per agent, equal sizes, built one after another) to ``backend``.

        Args:
            nets: per-agent modules ``[M, *obs] -> [M, O]``; ``fork`` scripts them.
            obs_shape: one agent's observation shape.
            out_features: ``O``.
            stack: builds the ``batched`` core from ``nets`` (copies the weights).
            backend: ``"batched"``, ``"fork"`` or ``"loop"``.
            agent_module: how messages name the per-agent module.
        """
        super().__init__()
        check_choice("backend", backend, BACKENDS)
        check_positive("num_agents", len(nets))
        self.num_agents = len(nets)
        self.obs_shape = tuple(obs_shape)
        self.out_features = out_features
        self.backend = backend
        self.agent_module = agent_module
        self._state_shapes = {key: value.shape for key, value in nets[0].state_dict().items()}
        self.core: nn.Module
        if backend == "batched":
            self.core = stack(nets)
        elif backend == "fork":
            self.core = script_fork_runner(nets)
        else:
            self.core = nn.ModuleList(nets)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Run agent ``i``'s module on ``x[..., i, *obs]``: ``[*B, A, *obs] -> [*B, A, O]``."""
        check_encoder_input(x, self.num_agents, self.obs_shape, type(self).__name__)
        batch_shape = x.shape[: x.dim() - len(self.obs_shape) - 1]
        flat = x.reshape(math.prod(batch_shape), self.num_agents, *self.obs_shape)
        if self.backend == "loop":
            nets = cast(nn.ModuleList, self.core)
            out = torch.stack([net(flat[:, i]) for i, net in enumerate(nets)], dim=1)
        else:
            out = self.core(flat)
        return out.reshape(*batch_shape, self.num_agents, self.out_features)

    def extra_repr(self) -> str:
        return f"num_agents={self.num_agents}, backend={self.backend!r}"
