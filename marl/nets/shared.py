"""One network shared by every agent of a group, with an optional one-hot agent ID.

Sharing parameters lets every agent learn from every other agent's experience; appending
a one-hot ID to each agent's input lets the shared network still behave differently per
agent (Gupta et al. 2017; Christianos et al. 2021, "Scaling Multi-Agent RL with Selective
Parameter Sharing"). All agents run through one batched call, which is why the shared
network is about as fast as the stacked independent backend (``benchmarks/backends.py``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from marl.nets._checks import check_group_input, check_positive
from marl.nets.mlp import mlp


def append_agent_id(x: torch.Tensor, agent_eye: torch.Tensor) -> torch.Tensor:
    """Append agent ``i``'s one-hot ID to ``x[..., i, :]``: ``[*B, A, F] -> [*B, A, F + A]``.

    Args:
        x: ``[*B, A, F]`` per-agent inputs.
        agent_eye: ``[A, A]`` identity, row ``i`` agent ``i``'s ID.
    """
    # expand is a view, so the only allocation is the cat the network input needs anyway.
    ids = agent_eye.to(x.dtype).expand(*x.shape[:-2], -1, -1)
    return torch.cat([x, ids], dim=-1)


class SharedNet(nn.Module):
    """One MLP for all ``num_agents`` agents: ``[*B, A, F] -> [*B, A, O]``.

    Attributes:
        mlp: the shared ``nn.Sequential``; its input size is ``F + A`` with ``agent_id``,
            else ``F``.
        agent_eye: ``[A, A]`` identity whose row ``i`` is agent ``i``'s one-hot ID; a
            non-persistent buffer, so it follows ``.to(device)`` but stays out of checkpoints.
    """

    agent_eye: torch.Tensor

    def __init__(
        self,
        in_features: int,
        out_features: int,
        num_agents: int,
        hidden: Sequence[int] = (64, 64),
        activation: str = "tanh",
        out_gain: float = 1.0,
        agent_id: bool = True,
    ) -> None:
        """Build the shared MLP.

        Args:
            in_features: ``F``, per-agent input features.
            out_features: ``O``, per-agent outputs.
            num_agents: ``A``, agents in the group.
            hidden: hidden layer sizes.
            activation: ``"tanh"`` or ``"relu"``.
            out_gain: orthogonal gain of the output layer (0.01 policy, 1.0 value).
            agent_id: append a one-hot agent ID (``A`` extra features) to each agent's input.
        """
        super().__init__()
        check_positive("num_agents", num_agents)
        self.in_features = in_features
        self.out_features = out_features
        self.num_agents = num_agents
        self.agent_id = agent_id
        extra = num_agents if agent_id else 0
        self.mlp = mlp(in_features + extra, hidden, out_features, activation, out_gain)
        self.register_buffer("agent_eye", torch.eye(num_agents), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Run every agent through the shared MLP.

        Args:
            x: ``[*B, A, F]`` per-agent inputs.

        Returns:
            ``[*B, A, O]`` per-agent outputs.
        """
        check_group_input(x, self.num_agents, self.in_features, type(self).__name__)
        batch_shape = x.shape[:-2]
        if self.agent_id:
            x = append_agent_id(x, self.agent_eye)
        # One call on [*B*A, F + A]: agents are just more rows of the same matmul.
        rows = x.reshape(math.prod(batch_shape) * self.num_agents, x.shape[-1])
        return self.mlp(rows).reshape(*batch_shape, self.num_agents, self.out_features)

    def per_agent_parameters(self) -> list[list[nn.Parameter]]:
        """Return one list holding all parameters: shared parameters belong to every agent."""
        return [list(self.parameters())]

    def extra_repr(self) -> str:
        return f"num_agents={self.num_agents}, agent_id={self.agent_id}"
