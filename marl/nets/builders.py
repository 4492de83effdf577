"""The builders of agent-group networks: the one place the ``sharing`` switch lives.

:func:`make_group_net` builds feed-forward group networks, :func:`make_recurrent_group_net`
recurrent ones; both in the shared form (one network, one-hot agent IDs) or independent
(``batched``, ``fork`` or ``loop``).
"""

from __future__ import annotations

from collections.abc import Sequence

from marl.nets._checks import check_choice
from marl.nets.independent import BACKENDS, IndependentNets
from marl.nets.recurrent import RNN_HIDDEN, IndependentGRUs, SharedGRU
from marl.nets.shared import SharedNet

SHARING_MODES = ("shared", "independent")
"""Allowed values of ``make_group_net(sharing=...)``."""

GroupNet = SharedNet | IndependentNets
"""What :func:`make_group_net` returns; both map ``[*B, A, F] -> [*B, A, O]``."""

RecurrentGroup = SharedGRU | IndependentGRUs
"""What :func:`make_recurrent_group_net` returns; both map ``[T, B, A, F] -> [T, B, A, O]``."""


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


def make_recurrent_group_net(
    sharing: str,
    in_features: int,
    out_features: int,
    num_agents: int,
    hidden: Sequence[int] | None = None,
    rnn_hidden: int = RNN_HIDDEN,
    activation: str = "tanh",
    out_gain: float = 1.0,
    agent_id: bool = True,
    backend: str = "batched",
) -> RecurrentGroup:
    """Build the recurrent network of one agent group: ``trunk -> GRU -> head`` per agent.

    The result maps ``(obs: [T, B, A, F], hidden: [B, A, H], first: [T, B, A],
    alive: [T, B, A] | None) -> (out: [T, B, A, O], hidden_last: [B, A, H])``; ``step``
    does one time step (:mod:`marl.nets.recurrent`).

    Args:
        sharing: ``"shared"`` (one network for all agents) or ``"independent"``.
        in_features: ``F``, per-agent input features.
        out_features: ``O``, per-agent outputs.
        num_agents: ``A``, agents in the group.
        hidden: sizes of the input layers before the GRU (``Linear -> act`` each); ``None``
            gives one layer of ``rnn_hidden`` (EPyMARL's layout), ``()`` none.
        rnn_hidden: ``H``, the GRU's state size.
        activation: ``"tanh"`` or ``"relu"``, after every input layer.
        out_gain: orthogonal gain of the output layer (0.01 policy heads, 1.0 value heads).
        agent_id: ``shared`` only: append a one-hot agent ID to each agent's input.
        backend: ``independent`` only: ``"batched"`` (default), ``"fork"`` or ``"loop"``.
            Checked for both modes so a typo never passes silently.

    Raises:
        ValueError: for an unknown ``sharing``, ``backend`` or ``activation``, or a
            non-positive size.
    """
    check_choice("sharing", sharing, SHARING_MODES)
    check_choice("backend", backend, BACKENDS)
    if sharing == "shared":
        return SharedGRU(
            in_features, out_features, num_agents, hidden, rnn_hidden, activation, out_gain,
            agent_id,
        )
    return IndependentGRUs(
        in_features, out_features, num_agents, hidden, rnn_hidden, activation, out_gain, backend
    )
