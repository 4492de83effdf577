"""An entity encoder for observations of ``N`` entity rows ``[N, F]``, shared or per agent.

One agent's encoder, :class:`EntityEncoder`, maps ``[M, N, F] -> [M, O]``:

1. one shared embedding for every row (``Linear -> ReLU -> Linear -> ReLU``, size ``E``);
2. multi-head self-attention over the rows, added to the embedding (a residual);
3. a pool over the rows: ``"attention"`` (one learned query attends over the rows, as in
   Set Transformer's pooling by attention, Lee et al. 2019), ``"mean"`` or ``"max"``;
4. ``Linear -> ReLU`` to ``O`` features.

Attention and pooling are permutation invariant, so the output does not depend on row
order. All-zero rows are absent entities: they are masked out of the attention keys and
the pool, so they have no influence at all; with every row absent the pool is zero, with
finite gradients (:func:`masked_softmax`). The learned query starts at zero, so the
attention pool starts as the mean.

:class:`StackedEntityEncoder` is the ``batched`` form: every linear map is one ``baddbmm``
for all agents (:class:`~marl.nets.independent.StackedMLP`), attention and pooling run on
``[A, N, ...]`` with the same functions. Kept without ``from __future__ import
annotations``: the ``fork`` backend scripts :class:`EntityEncoder`.
"""

import math
from collections.abc import Sequence
from typing import cast

import torch
from torch import Tensor, nn

from marl.nets._checks import check_choice, check_positive
from marl.nets._encoder_group import IndependentEncoders, SharedEncoder
from marl.nets._gru import trunk
from marl.nets.independent import BACKENDS, StackedMLP
from marl.nets.mlp import HIDDEN_GAIN, mlp

POOLS = ("attention", "mean", "max")
"""Allowed values of ``EntityEncoder(pool=...)``."""

ENTITY_EMBED, ENTITY_HEADS, ENTITY_FEATURES = 64, 4, 64
"""Defaults: embedding size ``E``, attention heads, output size ``O``."""


def entity_mask(x: Tensor) -> Tensor:
    """``[..., N, F] -> [..., N]`` bool, true for present rows (any feature non-zero)."""
    return (x != 0).any(dim=-1)


def masked_softmax(scores: Tensor, mask: Tensor) -> Tensor:
    """Softmax over the last axis restricted to ``mask`` (broadcastable); zeros where none.

    Masked entries get exactly zero weight; a row with no entry in ``mask`` gets all zeros,
    with finite gradients (``softmax`` over all ``-inf`` would give NaN).
    """
    mask = mask.expand_as(scores)
    # Softmax is shift invariant, so the shift by the largest present score needs no
    # gradient; it keeps exp() from overflowing.
    top = scores.masked_fill(~mask, float("-inf")).amax(dim=-1, keepdim=True).detach()
    shifted = (scores - top).masked_fill(~mask, 0.0)
    exps = torch.exp(shifted) * mask.to(scores.dtype)
    # The largest present entry contributes exp(0) = 1, so the clamp only acts (0 -> 1)
    # where no entry is present, turning 0 / 0 into zeros.
    return exps / exps.sum(dim=-1, keepdim=True).clamp(min=1.0)


def self_attention(qkv: Tensor, mask: Tensor, heads: int) -> Tensor:
    """Multi-head attention of every row over the present rows (before the output map).

    Args:
        qkv: ``[..., N, 3E]``, queries, keys and values of every row.
        mask: ``[..., N]`` bool, present rows (the keys a query may attend to).
        heads: number of heads; ``E`` is a multiple of it.

    Returns:
        ``[..., N, E]``.
    """
    rows, size = qkv.shape[-2], qkv.shape[-1] // 3
    # List concatenation, not [*shape, ...]: TorchScript (the fork backend) has no starred lists.
    split = qkv.reshape(list(qkv.shape[:-1]) + [3, heads, size // heads])  # noqa: RUF005
    split = split.movedim(-3, -4)
    # [..., 3, N, heads, d] -> three [..., heads, N, d].
    query, key, value = [part.transpose(-2, -3) for part in split.unbind(dim=-4)]
    scores = torch.matmul(query, key.transpose(-1, -2)) / math.sqrt(size // heads)
    weights = masked_softmax(scores, mask.unsqueeze(-2).unsqueeze(-2))
    out = torch.matmul(weights, value).transpose(-2, -3)  # [..., N, heads, d]
    return out.reshape(list(out.shape[:-3]) + [rows, size])  # noqa: RUF005


def pool_rows(rows: Tensor, mask: Tensor, pool: str, query: Tensor) -> Tensor:
    """Pool ``rows: [..., N, E]`` over the present rows ``mask: [..., N]`` to ``[..., E]``.

    ``query: [..., E, 1]`` (broadcastable) is the learned query of the ``"attention"`` pool.
    Every pool gives zeros where no row is present.
    """
    present = mask.unsqueeze(-1).to(rows.dtype)  # [..., N, 1]
    if pool == "mean":
        return (rows * present).sum(dim=-2) / present.sum(dim=-2).clamp(min=1.0)
    if pool == "max":
        filled = rows.masked_fill(~mask.unsqueeze(-1), float("-inf"))
        return torch.where(present.amax(dim=-2) > 0, filled.amax(dim=-2), 0.0)
    scores = torch.matmul(rows, query).squeeze(-1) / math.sqrt(rows.shape[-1])
    weights = masked_softmax(scores, mask)
    return torch.matmul(weights.unsqueeze(-2), rows).squeeze(-2)


class EntityEncoder(nn.Module):
    """One agent's entity encoder: ``[M, N, F] -> [M, O]`` (see the module docstring).

    Attributes:
        embed: per-row ``Linear -> ReLU -> Linear -> ReLU``, ``F -> E``.
        attention: ``nn.Sequential`` of one ``Linear(E, 3E)``: queries, keys, values.
        attention_out: ``nn.Sequential`` of one ``Linear(E, E)``.
        query: ``[E]``, the learned query of the ``"attention"`` pool (zeros at init).
        head: ``nn.Sequential`` of one ``Linear(E, O)``, followed by a ReLU.
    """

    def __init__(
        self,
        entity_features: int,
        features: int = ENTITY_FEATURES,
        embed: int = ENTITY_EMBED,
        heads: int = ENTITY_HEADS,
        pool: str = "attention",
    ) -> None:
        super().__init__()
        check_choice("pool", pool, POOLS)
        for name, value in (("features", features), ("embed", embed), ("heads", heads)):
            check_positive(name, value)
        if embed % heads:
            raise ValueError(f"embed ({embed}) must be a multiple of heads ({heads}).")
        self.pool = pool
        self.heads = heads
        self.embed = trunk(entity_features, [embed, embed], "relu")
        self.attention = mlp(embed, [], 3 * embed, "relu", 1.0)
        self.attention_out = mlp(embed, [], embed, "relu", 1.0)
        self.query = nn.Parameter(torch.zeros(embed))
        self.head = mlp(embed, [], features, "relu", HIDDEN_GAIN)

    def forward(self, x: Tensor) -> Tensor:
        """``x: [M, N, F]`` -> ``[M, O]``; all-zero rows of ``x`` are absent."""
        mask = entity_mask(x)
        rows = self.embed(x)
        rows = rows + self.attention_out(self_attention(self.attention(rows), mask, self.heads))
        pooled = pool_rows(rows, mask, self.pool, self.query.unsqueeze(-1))
        return torch.relu(self.head(pooled))


class StackedEntityEncoder(nn.Module):
    """``A`` :class:`EntityEncoder` networks as stacked tensors: ``[N, A, R, F] -> [N, A, O]``.

    Attributes:
        embed, attention, attention_out, head: :class:`StackedMLP` of those layers.
        query: ``[A, 1, E]``.
    """

    def __init__(self, encoders: Sequence[EntityEncoder]) -> None:
        """Stack the weights of ``encoders`` (one per agent, equal sizes); copies them."""
        super().__init__()
        first = encoders[0]
        self.pool, self.heads = first.pool, first.heads
        self._parts = ("embed", "attention", "attention_out", "head")
        for part in self._parts:
            nets = [cast(nn.Sequential, getattr(encoder, part)) for encoder in encoders]
            setattr(self, part, StackedMLP(nets, "relu"))
        with torch.no_grad():
            query = torch.stack([encoder.query.unsqueeze(0) for encoder in encoders])
        self.query = nn.Parameter(query)

    def forward(self, x: Tensor) -> Tensor:
        """``x: [N, A, R, F]`` -> ``[N, A, O]``, agent ``a``'s encoder on ``x[:, a]``."""
        x = x.transpose(0, 1)
        agents = x.shape[0]
        mask = entity_mask(x)  # [A, N, R]

        def stacked(part: str, h: Tensor) -> Tensor:
            out = getattr(self, part)(h.reshape(agents, -1, h.shape[-1]))
            return out.reshape(*h.shape[:-1], out.shape[-1])

        # The embedding's StackedMLP leaves the activation off its last layer; add it back.
        rows = torch.relu(stacked("embed", x))
        attended = self_attention(stacked("attention", rows), mask, self.heads)
        rows = rows + stacked("attention_out", attended)
        pooled = pool_rows(rows, mask, self.pool, self.query.unsqueeze(-1))  # [A, N, E]
        return torch.relu(stacked("head", pooled)).transpose(0, 1)

    def agent_state(self, agent: int) -> dict[str, Tensor]:
        """Agent ``agent``'s weights as an :class:`EntityEncoder` state dict (views)."""
        state = {"query": self.query[agent, 0]}
        for part in self._parts:
            for key, value in cast(StackedMLP, getattr(self, part)).agent_state(agent).items():
                state[f"{part}.{key}"] = value
        return state

    def extra_repr(self) -> str:
        return f"pool={self.pool!r}, heads={self.heads}"


def make_entity_encoder(
    sharing: str,
    obs_shape: Sequence[int],
    num_agents: int,
    features: int = ENTITY_FEATURES,
    embed: int = ENTITY_EMBED,
    heads: int = ENTITY_HEADS,
    pool: str = "attention",
    backend: str = "batched",
) -> SharedEncoder | IndependentEncoders:
    """The entity encoder of a group: ``[*B, A, N, F] -> [*B, A, features]``.

    Args:
        sharing: ``"shared"`` or ``"independent"``.
        obs_shape: ``(N, F)``, one agent's entity rows.
        num_agents: ``A``.
        features, embed, heads, pool: as for :class:`EntityEncoder`.
        backend: ``independent`` only: ``"batched"``, ``"fork"`` or ``"loop"``.
    """
    check_choice("sharing", sharing, ("shared", "independent"))
    check_choice("backend", backend, BACKENDS)
    check_positive("num_agents", num_agents)
    if len(obs_shape) != 2:
        raise ValueError(
            f"the entity encoder needs observations [N, F] (N entity rows of F features); "
            f"got shape {list(obs_shape)}."
        )
    encoders = [
        EntityEncoder(int(obs_shape[1]), features, embed, heads, pool)
        for _ in range(1 if sharing == "shared" else num_agents)
    ]
    if sharing == "shared":
        return SharedEncoder(encoders[0], obs_shape, num_agents, features)
    return IndependentEncoders(
        encoders, obs_shape, features, _stack, backend, "EntityEncoder"
    )


def _stack(nets: Sequence[nn.Module]) -> StackedEntityEncoder:
    return StackedEntityEncoder(cast(Sequence[EntityEncoder], nets))
