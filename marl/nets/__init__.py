"""Networks for agent groups: ``[*B, A, F] -> [*B, A, O]`` with shared or independent weights.

One switch, ``sharing``, picks between a :class:`SharedNet` (one MLP for all agents, one-hot
agent ID appended) and :class:`IndependentNets` (one MLP per agent, run by the ``batched``,
``fork`` or ``loop`` backend). :func:`make_group_net` is the one place that switch lives.

The recurrent counterparts map whole sequences, ``[T, B, A, F] -> [T, B, A, O]`` with a
state ``[B, A, H]`` passed in and returned (:mod:`marl.nets.recurrent`):
:class:`SharedGRU`, :class:`IndependentGRUs`, built by :func:`make_recurrent_group_net`.

Encoders and trunk parts for composed networks (``encoder -> (one-hot ID) -> trunk ->
(GRU) -> head``), each shared or independent: :func:`make_cnn_encoder` (images
``[H, W, C]``), :func:`make_entity_encoder` (entity rows ``[N, F]``, from a flat observation
through an :class:`EntityLayout`), :func:`make_trunk` (the MLP with optional LayerNorm and
residual blocks); :func:`choose_encoder` picks the encoder from the observation's shape.
:func:`make_composed_group_net` puts them together (:class:`ComposedGroupNet`); for flat
observations without trunk options it returns :func:`make_group_net`'s network unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence

from marl.nets._checks import check_choice
from marl.nets._encoder_group import IndependentEncoders, SharedEncoder
from marl.nets.cnn import CNNEncoder, ConvSpec, GroupedCNN, default_conv_layers, make_cnn_encoder
from marl.nets.composed import ComposedGroupNet, make_composed_group_net, resolve_encoder
from marl.nets.encoders import ENCODER_SHAPES, ENCODERS, choose_encoder
from marl.nets.entity import POOLS, EntityEncoder, StackedEntityEncoder, make_entity_encoder
from marl.nets.entity_layout import EntityLayout, EntitySlice, mpe_spread_layout
from marl.nets.independent import BACKENDS, IndependentNets, StackedMLP
from marl.nets.mlp import ACTIVATIONS, HIDDEN_GAIN, layer_init, linear_layers, mlp
from marl.nets.recurrent import (
    RNN_HIDDEN,
    GRUAgent,
    IndependentGRUs,
    RecurrentGroupNet,
    SharedGRU,
)
from marl.nets.shared import SharedNet
from marl.nets.stacked_gru import StackedGRUAgents, StackedGRUCell
from marl.nets.trunk import StackedTrunkMLP, TrunkMLP, make_trunk

SHARING_MODES = ("shared", "independent")
"""Allowed values of ``make_group_net(sharing=...)``."""

GroupNet = SharedNet | IndependentNets
"""What :func:`make_group_net` returns; both map ``[*B, A, F] -> [*B, A, O]``."""

RecurrentGroup = SharedGRU | IndependentGRUs
"""What :func:`make_recurrent_group_net` returns; both map ``[T, B, A, F] -> [T, B, A, O]``."""

__all__ = [
    "ACTIVATIONS",
    "BACKENDS",
    "ENCODERS",
    "ENCODER_SHAPES",
    "HIDDEN_GAIN",
    "POOLS",
    "RNN_HIDDEN",
    "SHARING_MODES",
    "CNNEncoder",
    "ComposedGroupNet",
    "ConvSpec",
    "EntityEncoder",
    "EntityLayout",
    "EntitySlice",
    "GRUAgent",
    "GroupNet",
    "GroupedCNN",
    "IndependentEncoders",
    "IndependentGRUs",
    "IndependentNets",
    "RecurrentGroup",
    "RecurrentGroupNet",
    "SharedEncoder",
    "SharedGRU",
    "SharedNet",
    "StackedEntityEncoder",
    "StackedGRUAgents",
    "StackedGRUCell",
    "StackedMLP",
    "StackedTrunkMLP",
    "TrunkMLP",
    "choose_encoder",
    "default_conv_layers",
    "layer_init",
    "linear_layers",
    "make_cnn_encoder",
    "make_composed_group_net",
    "make_entity_encoder",
    "make_group_net",
    "make_recurrent_group_net",
    "make_trunk",
    "mlp",
    "mpe_spread_layout",
    "resolve_encoder",
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
