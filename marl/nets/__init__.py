"""Networks for agent groups: ``[*B, A, F] -> [*B, A, O]`` with shared or independent weights.

One switch, ``sharing``, picks between a :class:`SharedNet` (one MLP for all agents, one-hot
agent ID appended) and :class:`IndependentNets` (one MLP per agent, run by the ``batched``,
``fork`` or ``loop`` backend). :func:`make_group_net` is the one place that switch lives.
"""

from __future__ import annotations

from collections.abc import Sequence

from marl.nets._checks import check_choice
from marl.nets.independent import BACKENDS, IndependentNets, StackedMLP
from marl.nets.mlp import ACTIVATIONS, HIDDEN_GAIN, layer_init, linear_layers, mlp
from marl.nets.shared import SharedNet

SHARING_MODES = ("shared", "independent")
"""Allowed values of ``make_group_net(sharing=...)``."""

GroupNet = SharedNet | IndependentNets
"""What :func:`make_group_net` returns; both map ``[*B, A, F] -> [*B, A, O]``."""

__all__ = [
    "ACTIVATIONS",
    "BACKENDS",
    "HIDDEN_GAIN",
    "SHARING_MODES",
    "GroupNet",
    "IndependentNets",
    "SharedNet",
    "StackedMLP",
    "layer_init",
    "linear_layers",
    "make_group_net",
    "mlp",
]


def make_group_net(
    sharing: str,
    in_features: int,
    out_features: int,
    num_agents: int,
    hidden: Sequence[int] = (64, 64),
    activation: str = "tanh",
    out_gain: float = 1.0,
    agent_id: bool = True,
    backend: str = "batched",
) -> GroupNet:
    """Build the network of one agent group, mapping ``[*B, A, F] -> [*B, A, O]``.

    Args:
        sharing: ``"shared"`` (one MLP for all agents) or ``"independent"`` (one per agent).
        in_features: ``F``, per-agent input features.
        out_features: ``O``, per-agent outputs.
        num_agents: ``A``, agents in the group.
        hidden: hidden layer sizes.
        activation: ``"tanh"`` or ``"relu"``.
        out_gain: orthogonal gain of the output layer (0.01 policy heads, 1.0 value heads).
        agent_id: ``shared`` only: append a one-hot agent ID to each agent's input.
            Independent networks need no ID, so it is ignored there.
        backend: ``independent`` only: ``"batched"`` (default), ``"fork"`` or ``"loop"``.
            Checked for both modes so a typo never passes silently.

    Raises:
        ValueError: for an unknown ``sharing``, ``backend`` or ``activation``.
    """
    check_choice("sharing", sharing, SHARING_MODES)
    check_choice("backend", backend, BACKENDS)
    if sharing == "shared":
        return SharedNet(
            in_features, out_features, num_agents, hidden, activation, out_gain, agent_id
        )
    return IndependentNets(
        in_features, out_features, num_agents, hidden, activation, out_gain, backend
    )
