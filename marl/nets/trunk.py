"""The MLP trunk with optional LayerNorm and residual blocks, shared or one per agent.

:class:`TrunkMLP` is :func:`~marl.nets.mlp.mlp` (same layers, same initialisation under
the same seed) with two options, both off by default:

- ``layer_norm``: ``Linear -> LayerNorm -> act`` for every hidden layer; the output layer
  has none (Ba et al. 2016; LayerNorm in the trunk keeps large or growing networks stable,
  e.g. Ball et al. 2023, "Efficient Online RL with Offline Data").
- ``residual``: a hidden layer whose input and output sizes match (two consecutive hidden
  sizes equal) adds its input back, ``h + act(norm(W h + b))`` (He et al. 2016).

With both off it computes exactly what ``mlp()`` computes, bit for bit, so the existing
networks keep their outputs. :class:`StackedTrunkMLP` is the ``batched`` form: one
``baddbmm`` per layer for all agents and per-agent LayerNorm parameters ``[A, 1, H]``.
Kept without ``from __future__ import annotations``: the ``fork`` backend scripts
:class:`TrunkMLP`.
"""

from collections.abc import Sequence
from typing import cast

import torch
from torch import Tensor, nn
from torch.nn import functional

from marl.nets._checks import check_choice, check_positive
from marl.nets._encoder_group import IndependentEncoders, SharedEncoder
from marl.nets.independent import BACKENDS, StackedMLP
from marl.nets.mlp import ACTIVATION_FUNCTIONS, ACTIVATIONS, linear_layers, mlp


class TrunkBlock(nn.Module):
    """One hidden layer: ``act(norm(linear(x)))``, plus ``x`` when ``residual``.

    Attributes:
        linear: the ``nn.Linear``; norm: ``nn.LayerNorm`` or ``nn.Identity``;
        residual: add the input back (input and output sizes are equal).
    """

    def __init__(
        self, linear: nn.Linear, activation: str, layer_norm: bool, residual: bool
    ) -> None:
        super().__init__()
        self.linear = linear
        self.norm: nn.Module = nn.LayerNorm(linear.out_features) if layer_norm else nn.Identity()
        self.act = ACTIVATIONS[activation]()
        self.residual = residual

    def forward(self, x: Tensor) -> Tensor:
        """``x: [M, in] -> [M, out]``."""
        out = self.act(self.norm(self.linear(x)))
        return x + out if self.residual else out


class TrunkMLP(nn.Module):
    """``mlp()`` with optional LayerNorm and residual blocks: ``[M, F] -> [M, O]``.

    Attributes:
        blocks: one :class:`TrunkBlock` per hidden layer.
        out: the output ``nn.Linear`` (orthogonal gain ``out_gain``).
    """

    def __init__(
        self,
        in_features: int,
        hidden: Sequence[int],
        out_features: int,
        activation: str = "tanh",
        out_gain: float = 1.0,
        layer_norm: bool = False,
        residual: bool = False,
    ) -> None:
        """Arguments as for :func:`~marl.nets.mlp.mlp`, plus the two options."""
        super().__init__()
        # Built by mlp() so the weights are those mlp() draws under the same seed.
        linears = [layer for _, layer in linear_layers(mlp(
            in_features, hidden, out_features, activation, out_gain
        ))]
        sizes = [in_features, *hidden]
        self.blocks = nn.ModuleList(
            TrunkBlock(
                linear, activation, layer_norm, residual and index > 0 and sizes[index] == size
            )
            for index, (linear, size) in enumerate(zip(linears[:-1], hidden, strict=True))
        )
        self.out = linears[-1]
        self.activation = activation
        self.layer_norm = layer_norm

    def forward(self, x: Tensor) -> Tensor:
        """``x: [M, F] -> [M, O]``."""
        for block in self.blocks:
            x = block(x)
        return self.out(x)


class StackedTrunkMLP(nn.Module):
    """``A`` :class:`TrunkMLP` networks as stacked tensors: ``[N, A, F] -> [N, A, O]``.

    Attributes:
        linears: :class:`StackedMLP` holding every layer's ``[A, in, out]`` weights.
        norm_weight_l, norm_bias_l: ``[A, 1, H]`` LayerNorm parameters of hidden layer
            ``l`` (with ``layer_norm``).
    """

    def __init__(self, trunks: Sequence[TrunkMLP]) -> None:
        """Stack the weights of ``trunks`` (one per agent, equal sizes); copies them."""
        super().__init__()
        first = trunks[0]
        self.residual = [cast(TrunkBlock, block).residual for block in first.blocks]
        self.layer_norm = first.layer_norm
        self._act = ACTIVATION_FUNCTIONS[first.activation]
        layers = [
            nn.Sequential(*[cast(TrunkBlock, b).linear for b in trunk.blocks], trunk.out)
            for trunk in trunks
        ]
        self.linears = StackedMLP(layers, first.activation)
        self._eps = [cast(nn.LayerNorm, cast(TrunkBlock, b).norm).eps for b in first.blocks] \
            if self.layer_norm else []
        with torch.no_grad():
            for index in range(len(self._eps)):
                norms = [cast(TrunkBlock, trunk.blocks[index]).norm for trunk in trunks]
                for name in ("weight", "bias"):
                    stacked = torch.stack([getattr(norm, name).unsqueeze(0) for norm in norms])
                    self.register_parameter(f"norm_{name}_{index}", nn.Parameter(stacked))

    def forward(self, x: Tensor) -> Tensor:
        """``x: [N, A, F]`` -> ``[N, A, O]``, agent ``a``'s trunk on ``x[:, a]``."""
        h = x.transpose(0, 1)
        weights, biases = self.linears.weights, self.linears.biases
        for index, residual in enumerate(self.residual):
            out = torch.baddbmm(biases[index], h, weights[index])
            if self.layer_norm:
                normed = functional.layer_norm(out, out.shape[-1:], eps=self._eps[index])
                weight = getattr(self, f"norm_weight_{index}")
                out = torch.addcmul(getattr(self, f"norm_bias_{index}"), normed, weight)
            out = self._act(out)
            h = h + out if residual else out
        return torch.baddbmm(biases[-1], h, weights[-1]).transpose(0, 1)

    def agent_state(self, agent: int) -> dict[str, Tensor]:
        """Agent ``agent``'s weights as a :class:`TrunkMLP` state dict (views)."""
        state: dict[str, Tensor] = {}
        weights, biases = self.linears.weights, self.linears.biases
        for index in range(len(self.residual)):
            state[f"blocks.{index}.linear.weight"] = weights[index][agent].T
            state[f"blocks.{index}.linear.bias"] = biases[index][agent, 0]
            if self.layer_norm:
                for name in ("weight", "bias"):
                    stacked = getattr(self, f"norm_{name}_{index}")
                    state[f"blocks.{index}.norm.{name}"] = stacked[agent, 0]
        state["out.weight"], state["out.bias"] = weights[-1][agent].T, biases[-1][agent, 0]
        return state

    def extra_repr(self) -> str:
        return f"layer_norm={self.layer_norm}, residual={self.residual}"


def make_trunk(
    sharing: str,
    in_features: int,
    out_features: int,
    num_agents: int,
    hidden: Sequence[int] = (64, 64),
    activation: str = "tanh",
    out_gain: float = 1.0,
    layer_norm: bool = False,
    residual: bool = False,
    backend: str = "batched",
) -> SharedEncoder | IndependentEncoders:
    """The trunk of a group: ``[*B, A, F] -> [*B, A, O]`` (no agent ID is appended here).

    Args:
        sharing: ``"shared"`` or ``"independent"``.
        in_features, out_features, num_agents, hidden, activation, out_gain: as for
            :func:`marl.nets.make_group_net`.
        layer_norm, residual: see :class:`TrunkMLP`.
        backend: ``independent`` only: ``"batched"``, ``"fork"`` or ``"loop"``.
    """
    check_choice("sharing", sharing, ("shared", "independent"))
    check_choice("backend", backend, BACKENDS)
    check_positive("num_agents", num_agents)
    trunks = [
        TrunkMLP(in_features, hidden, out_features, activation, out_gain, layer_norm, residual)
        for _ in range(1 if sharing == "shared" else num_agents)
    ]
    if sharing == "shared":
        return SharedEncoder(trunks[0], (in_features,), num_agents, out_features)
    return IndependentEncoders(
        trunks, (in_features,), out_features, _stack, backend, "TrunkMLP"
    )


def _stack(nets: Sequence[nn.Module]) -> StackedTrunkMLP:
    return StackedTrunkMLP(cast(Sequence[TrunkMLP], nets))
