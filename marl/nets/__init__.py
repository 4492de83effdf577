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

from marl.nets._encoder_group import IndependentEncoders, SharedEncoder
from marl.nets.builders import (
    SHARING_MODES,
    GroupNet,
    RecurrentGroup,
    make_group_net,
    make_recurrent_group_net,
)
from marl.nets.cnn import CNNEncoder, ConvSpec, GroupedCNN, default_conv_layers, make_cnn_encoder
from marl.nets.composed import (
    RNN_CHOICES,
    ComposedGroupNet,
    EncodedGRU,
    make_composed_group_net,
    resolve_encoder,
)
from marl.nets.encoders import ENCODER_SHAPES, ENCODERS, choose_encoder
from marl.nets.entity import POOLS, EntityEncoder, StackedEntityEncoder, make_entity_encoder
from marl.nets.entity_layout import (
    EntityLayout,
    EntitySlice,
    mpe_listener_layout,
    mpe_reference_layout,
    mpe_spread_layout,
)
from marl.nets.independent import BACKENDS, IndependentNets, StackedMLP
from marl.nets.mlp import ACTIVATIONS, HIDDEN_GAIN, layer_init, linear_layers, mlp
from marl.nets.recurrent import (
    RNN_HIDDEN,
    GRUAgent,
    IndependentGRUs,
    RecurrentGroupNet,
    ScanInputs,
    SharedGRU,
    unroll_together,
)
from marl.nets.shared import SharedNet
from marl.nets.stacked_gru import StackedGRUAgents, StackedGRUCell
from marl.nets.trunk import StackedTrunkMLP, TrunkMLP, make_trunk

__all__ = [
    "ACTIVATIONS",
    "BACKENDS",
    "ENCODERS",
    "ENCODER_SHAPES",
    "HIDDEN_GAIN",
    "POOLS",
    "RNN_CHOICES",
    "RNN_HIDDEN",
    "SHARING_MODES",
    "CNNEncoder",
    "ComposedGroupNet",
    "ConvSpec",
    "EncodedGRU",
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
    "ScanInputs",
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
    "mpe_listener_layout",
    "mpe_reference_layout",
    "mpe_spread_layout",
    "resolve_encoder",
    "unroll_together",
]
