"""Composed group networks: ``encoder -> (one-hot ID) -> trunk -> head``, shared or not.

:func:`make_composed_group_net` builds the network of one group from one agent's
observation shape. The encoder follows the shape (:func:`~marl.nets.encoders.choose_encoder`):
a CNN for images ``[H, W, C]``, the entity encoder for rows ``[N, F]`` (or for a flat
observation read through an :class:`~marl.nets.entity_layout.EntityLayout`), none for a
flat ``[D]``. The shared form appends the one-hot agent ID after the encoder, so the
encoder sees observations only; the trunk is :class:`~marl.nets.trunk.TrunkMLP`, whose
output layer is the head.

The network takes observations flattened, ``[*B, A, D]`` with ``D = prod(obs_shape)``, as
the learners store and normalise them, and restores ``[*B, A, *obs_shape]`` just before the
encoder. With no encoder and neither trunk option, :func:`make_composed_group_net` returns
exactly :func:`~marl.nets.make_group_net`'s network (same class, parameter names and
weights under the same seed), so flat-observation runs are unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import cast

import torch
from torch import nn

from marl.nets._checks import check_choice, check_group_input, check_positive
from marl.nets._encoder_group import IndependentEncoders, SharedEncoder
from marl.nets.builders import make_group_net, make_recurrent_group_net
from marl.nets.cnn import make_cnn_encoder
from marl.nets.encoders import choose_encoder
from marl.nets.entity import make_entity_encoder
from marl.nets.entity_layout import EntityLayout
from marl.nets.independent import BACKENDS, IndependentNets
from marl.nets.recurrent import (
    RNN_HIDDEN,
    IndependentGRUs,
    RecurrentGroupNet,
    ScanInputs,
    SharedGRU,
)
from marl.nets.shared import SharedNet, append_agent_id
from marl.nets.trunk import make_trunk

Encoder = SharedEncoder | IndependentEncoders

COMPOSED_SHARING = ("shared", "independent", "selective")
"""Allowed values of ``make_composed_group_net(sharing=...)``."""

RNN_CHOICES = ("none", "gru")
"""Allowed values of ``make_composed_group_net(rnn=...)``."""


class ComposedGroupNet(nn.Module):
    """``[*B, A, D] -> [*B, A, O]``: encoder, one-hot ID (shared form), trunk with head.

    Attributes:
        encoder_name: ``"mlp"`` (no encoder), ``"cnn"`` or ``"entity"``.
        encoder: the group's encoder ``[*B, A, *enc_shape] -> [*B, A, E]``, or ``None``.
        trunk: the group's trunk ``[*B, A, E (+ A)] -> [*B, A, O]``.
        layout: turns a flat observation into entity rows, or ``None``.
        agent_eye: ``[A, A]`` one-hot IDs (non-persistent buffer).
    """

    agent_eye: torch.Tensor

    def __init__(
        self,
        obs_shape: Sequence[int],
        encoder_name: str,
        encoder: Encoder | None,
        trunk: Encoder,
        num_agents: int,
        agent_id: bool,
        layout: EntityLayout | None = None,
    ) -> None:
        super().__init__()
        self.obs_shape = tuple(int(size) for size in obs_shape)
        self.in_features = math.prod(self.obs_shape)
        self.encoder_name = encoder_name
        self.encoder = encoder
        self.trunk = trunk
        self.num_agents = num_agents
        self.agent_id = agent_id
        self.layout = layout
        self.out_features = trunk.out_features
        self.register_buffer("agent_eye", torch.eye(num_agents), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x: [*B, A, D]`` flattened observations -> ``[*B, A, O]``."""
        check_group_input(x, self.num_agents, self.in_features, type(self).__name__)
        batch_shape = x.shape[:-2]
        h = x
        if self.layout is not None:
            h = self.layout.rows(x)  # [*B, A, N, F]
        elif self.encoder is not None:
            h = x.reshape(*batch_shape, self.num_agents, *self.obs_shape)
        if self.encoder is not None:
            h = self.encoder(h)
        if self.agent_id:
            h = append_agent_id(h, self.agent_eye)
        return self.trunk(h)

    def per_agent_parameters(self) -> list[list[nn.Parameter]]:
        """Agent ``i``'s parameters as list ``i`` (one list when shared)."""
        parts = [self.trunk] if self.encoder is None else [self.encoder, self.trunk]
        per_part = [part.per_agent_parameters() for part in parts]
        return [[p for params in agent for p in params] for agent in zip(*per_part, strict=True)]

    def extra_repr(self) -> str:
        return f"encoder={self.encoder_name!r}, obs_shape={list(self.obs_shape)}"


def make_composed_group_net(
    sharing: str,
    obs_shape: Sequence[int],
    out_features: int,
    num_agents: int,
    encoder: str = "auto",
    hidden: Sequence[int] = (64, 64),
    activation: str = "tanh",
    out_gain: float = 1.0,
    agent_id: bool = True,
    backend: str = "batched",
    layer_norm: bool = False,
    residual: bool = False,
    entity_layout: EntityLayout | None = None,
    entity_pool: str = "attention",
    rnn: str = "none",
    rnn_hidden: int = RNN_HIDDEN,
    group: str = "agents",
) -> SharedNet | IndependentNets | ComposedGroupNet | RecurrentGroupNet:
    """The network of one group reading observations ``[*B, A, prod(obs_shape)]``.

    With ``rnn="gru"`` it is a :class:`~marl.nets.recurrent.RecurrentGroupNet`
    (``encoder -> (one-hot ID) -> input layers -> GRU -> head``) mapping sequences
    ``[T, B, A, prod(obs_shape)]`` with a hidden state; see :mod:`marl.nets.recurrent`.

    Args:
        sharing: ``"shared"``, ``"independent"`` or ``"selective"`` (K networks for the
            A agents, :func:`marl.selective.share.share_networks`; built with one network,
            the warm-up form, until :func:`~marl.selective.share.set_index` sets K).
        obs_shape: one agent's observation shape, e.g. ``(18,)``, ``(7, 7, 3)``, ``(6, 7)``.
        out_features: ``O``.
        num_agents: ``A``.
        encoder: ``"auto"`` (by the shape; ``"entity"`` for a flat shape with
            ``entity_layout``), ``"mlp"``, ``"cnn"`` or ``"entity"``.
        hidden, activation, out_gain, agent_id, backend: as for
            :func:`~marl.nets.make_group_net`.
        layer_norm, residual: trunk options (:class:`~marl.nets.trunk.TrunkMLP`).
        entity_layout: entity slices of a flat observation (entity encoder only).
        entity_pool: ``"attention"``, ``"mean"`` or ``"max"``.
        rnn: ``"none"`` (feed-forward) or ``"gru"``; ``hidden`` are then the input layers
            before the GRU.
        rnn_hidden: the GRU's state size ``H``.
        group: the group's name (kept by selective networks).

    Raises:
        ValueError: when the encoder does not take ``obs_shape``, or the layout does not
            fit it; for an unknown name or a non-positive size; for ``layer_norm`` or
            ``residual`` with a GRU (its input layers have neither).
    """

    check_choice("sharing", sharing, COMPOSED_SHARING)
    check_choice("backend", backend, BACKENDS)
    check_positive("num_agents", num_agents)
    check_choice("rnn", rnn, RNN_CHOICES)
    if sharing == "selective":
        return _selective(obs_shape, out_features, num_agents, encoder, hidden, activation,
                          out_gain, agent_id, layer_norm, residual, entity_layout,
                          entity_pool, rnn, rnn_hidden, group)
    name, enc_shape = resolve_encoder(obs_shape, encoder, entity_layout)
    features = math.prod(obs_shape)
    layout = entity_layout if name == "entity" and len(obs_shape) == 1 else None
    net = _encoder(name, sharing, enc_shape, num_agents, entity_pool, backend)
    if rnn == "gru":
        if layer_norm or residual:
            raise ValueError(
                "layer_norm and residual shape the feed-forward trunk; the GRU's input layers "
                "have neither. Turn them off with rnn='gru'.")
        core = make_recurrent_group_net(
            sharing, features if net is None else net.out_features, out_features, num_agents,
            hidden, rnn_hidden, activation, out_gain, agent_id, backend)
        if net is None:
            return core
        return EncodedGRU(obs_shape, name, net, core, layout)
    if name == "mlp" and not (layer_norm or residual):
        return make_group_net(sharing, features, out_features, num_agents, hidden, activation,
                              out_gain, agent_id, backend)
    with_id = agent_id and sharing == "shared"
    trunk_in = (features if net is None else net.out_features) + (num_agents if with_id else 0)
    trunk = make_trunk(sharing, trunk_in, out_features, num_agents, hidden, activation,
                       out_gain, layer_norm, residual, backend)
    return ComposedGroupNet(obs_shape, name, net, trunk, num_agents, with_id, layout)


def _selective(obs_shape: Sequence[int], out_features: int, num_agents: int, encoder: str,
               hidden: Sequence[int], activation: str, out_gain: float, agent_id: bool,
               layer_norm: bool, residual: bool, entity_layout: EntityLayout | None,
               entity_pool: str, rnn: str, rnn_hidden: int, group: str
               ) -> ComposedGroupNet | RecurrentGroupNet:
    """The selective form: the independent ``batched`` network with the one-hot agent ID
    after the encoder (agents of one network must still be told apart), its stacks turned
    into ``K`` networks gathered by index (one network to start with)."""
    from marl.selective.share import share_networks  # marl.selective builds on marl.nets

    name, enc_shape = resolve_encoder(obs_shape, encoder, entity_layout)
    features = math.prod(obs_shape)
    layout = entity_layout if name == "entity" and len(obs_shape) == 1 else None
    net = _encoder(name, "independent", enc_shape, num_agents, entity_pool, "batched")
    width = features if net is None else net.out_features
    built: nn.Module
    if rnn == "gru":
        if layer_norm or residual:
            raise ValueError(
                "layer_norm and residual shape the feed-forward trunk; the GRU's input layers "
                "have neither. Turn them off with rnn='gru'.")
        core = IndependentGRUs(width, out_features, num_agents, hidden, rnn_hidden, activation,
                               out_gain, "batched", agent_id=agent_id)
        built = core if net is None else EncodedGRU(obs_shape, name, net, core, layout)
    else:
        trunk = make_trunk("independent", width + (num_agents if agent_id else 0),
                           out_features, num_agents, hidden, activation, out_gain, layer_norm,
                           residual, "batched")
        built = ComposedGroupNet(obs_shape, name, net, trunk, num_agents, agent_id, layout)
    return cast(ComposedGroupNet | RecurrentGroupNet, share_networks(built, num_agents, group))


def _encoder(name: str, sharing: str, enc_shape: tuple[int, ...], num_agents: int,
             entity_pool: str, backend: str) -> Encoder | None:
    """The group's encoder for ``name`` (``None`` for ``"mlp"``)."""
    if name == "cnn":
        return make_cnn_encoder(sharing, enc_shape, num_agents, backend=backend)
    if name == "entity":
        return make_entity_encoder(sharing, enc_shape, num_agents, pool=entity_pool,
                                   backend=backend)
    return None


class EncodedGRU(RecurrentGroupNet):
    """``[T, B, A, D] -> [T, B, A, O]``: an encoder on every step, then a recurrent core.

    The encoder runs once over all ``T * B`` steps (it has no state); the core
    (:class:`~marl.nets.recurrent.SharedGRU`, which appends the one-hot ID, or
    :class:`~marl.nets.recurrent.IndependentGRUs`) carries the hidden state.

    Attributes:
        encoder_name: ``"cnn"`` or ``"entity"``; encoder: the group's encoder;
        core: the recurrent network on the encoder's features; layout: entity slices of a
        flat observation, or ``None``.
    """

    def __init__(self, obs_shape: Sequence[int], encoder_name: str, encoder: Encoder,
                 core: RecurrentGroupNet, layout: EntityLayout | None) -> None:
        super().__init__(math.prod(obs_shape), core.out_features, core.num_agents,
                         core.hidden_size)
        self.obs_shape = tuple(int(size) for size in obs_shape)
        self.encoder_name = encoder_name
        self.encoder = encoder
        self.core = core
        self.layout = layout

    def unroll(self, obs: torch.Tensor, hidden: torch.Tensor, first: torch.Tensor,
               alive: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """See :meth:`RecurrentGroupNet.unroll`."""
        return self.core.unroll(self._encode(obs, hidden, first, alive), hidden, first, alive)

    def scan_inputs(self, obs: torch.Tensor, hidden: torch.Tensor, first: torch.Tensor,
                    alive: torch.Tensor | None = None) -> ScanInputs | None:
        """See :meth:`RecurrentGroupNet.scan_inputs`: the core's, on the encoded steps."""
        return self.core.scan_inputs(self._encode(obs, hidden, first, alive), hidden, first,
                                     alive)

    def scan_outputs(self, states: torch.Tensor, batch: int
                     ) -> tuple[torch.Tensor, torch.Tensor]:
        """See :meth:`RecurrentGroupNet.scan_outputs`."""
        return self.core.scan_outputs(states, batch)

    def _encode(self, obs: torch.Tensor, hidden: torch.Tensor, first: torch.Tensor,
                alive: torch.Tensor | None) -> torch.Tensor:
        """The encoder on every step: ``[T, B, A, D] -> [T, B, A, E]``."""
        self._check_inputs(obs, hidden, first, alive)
        if self.layout is not None:
            rows = self.layout.rows(obs)  # [T, B, A, N, F]
        else:
            rows = obs.reshape(*obs.shape[:-1], *self.obs_shape)
        return self.encoder(rows)

    def per_agent_parameters(self) -> list[list[nn.Parameter]]:
        """Agent ``i``'s parameters as list ``i`` (one list when shared)."""
        core = cast(SharedGRU | IndependentGRUs, self.core)
        per_part = [self.encoder.per_agent_parameters(), core.per_agent_parameters()]
        return [[p for params in agent for p in params] for agent in zip(*per_part, strict=True)]

    def extra_repr(self) -> str:
        return f"encoder={self.encoder_name!r}, obs_shape={list(self.obs_shape)}"


def resolve_encoder(
    obs_shape: Sequence[int], requested: str = "auto", layout: EntityLayout | None = None
) -> tuple[str, tuple[int, ...]]:
    """The encoder for ``obs_shape`` and the shape it reads (entity rows for a layout).

    A layout applies to a flat observation only: it gives the entity encoder its rows, and
    under ``"auto"`` it asks for that encoder.

    Raises:
        ValueError: as :func:`~marl.nets.encoders.choose_encoder`; a layout given for an
            observation that is not flat, or one that reaches past it.
    """
    shape = tuple(int(size) for size in obs_shape)
    if layout is None:
        return choose_encoder(shape, requested), shape
    if len(shape) != 1:
        raise ValueError(
            f"an entity layout reads flat observations [D], but this one has shape "
            f"{list(shape)}; drop the entity layout for it."
        )
    layout.check(shape[0])
    if requested not in ("auto", "entity"):
        choose_encoder(shape, requested)  # checks the name and the shape
        raise ValueError(
            f"an entity layout feeds the entity encoder, but encoder {requested!r} was asked "
            "for; set the encoder to 'entity' (or 'auto'), or drop the layout."
        )
    return "entity", layout.shape
