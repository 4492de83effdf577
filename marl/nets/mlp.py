"""Multi-layer perceptrons with the orthogonal initialisation RL code relies on.

Orthogonal weights with gain sqrt(2) on hidden layers and zero biases are one of the
implementation details that matter for PPO (Engstrom et al. 2020, "Implementation Matters
in Deep Policy Gradients"; Huang et al. 2022, "The 37 Implementation Details of PPO",
detail 2). The output gain is the caller's choice: 0.01 for policy heads, so the initial
policy is close to uniform, and 1.0 for value heads.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence

import torch
from torch import nn

from marl.nets._checks import check_choice, check_positive

HIDDEN_GAIN = math.sqrt(2.0)
"""Gain of the orthogonal init on hidden layers (the usual choice for tanh and relu)."""

ACTIVATIONS: dict[str, type[nn.Module]] = {"tanh": nn.Tanh, "relu": nn.ReLU}
"""Allowed ``activation`` names and the module each one builds."""

ACTIVATION_FUNCTIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "tanh": torch.tanh,
    "relu": torch.relu,
}
"""The same activations as plain functions, for code that holds raw weight tensors."""


def layer_init(layer: nn.Linear, gain: float = HIDDEN_GAIN, bias: float = 0.0) -> nn.Linear:
    """Initialise ``layer`` in place: orthogonal weight scaled by ``gain``, constant bias.

    Args:
        layer: the layer to initialise; its weight is ``[out, in]``.
        gain: scale of the orthogonal matrix; the weight ``W`` then satisfies
            ``W W^T = gain^2 I`` if ``out <= in``, else ``W^T W = gain^2 I``.
        bias: value every bias element is set to.

    Returns:
        ``layer`` itself, so calls can be nested inside ``nn.Sequential(...)``.
    """
    nn.init.orthogonal_(layer.weight, gain)
    nn.init.constant_(layer.bias, bias)
    return layer


def mlp(
    in_features: int,
    hidden: Sequence[int],
    out_features: int,
    activation: str = "tanh",
    out_gain: float = 1.0,
) -> nn.Sequential:
    """Build ``Linear -> act -> ... -> Linear`` mapping ``[*B, in_features] -> [*B, out_features]``.

    The linear layers sit at even indices of the returned ``nn.Sequential`` (``0``, ``2``,
    ...), activations at odd ones; there is no activation after the output layer.

    Args:
        in_features: size of the input features.
        hidden: sizes of the hidden layers; empty gives a single linear layer.
        out_features: size of the output.
        activation: ``"tanh"`` or ``"relu"``, applied after every hidden layer.
        out_gain: orthogonal gain of the output layer (0.01 for policy heads, 1.0 for values).

    Raises:
        ValueError: for an unknown ``activation`` or a non-positive layer size.
    """
    check_choice("activation", activation, ACTIVATIONS)
    sizes = [in_features, *hidden, out_features]
    for index, size in enumerate(sizes):
        check_positive(f"layer size {index} of {sizes}", size)
    layers: list[nn.Module] = []
    for size_in, size_out in itertools.pairwise(sizes[:-1]):
        layers += [layer_init(nn.Linear(size_in, size_out)), ACTIVATIONS[activation]()]
    layers.append(layer_init(nn.Linear(sizes[-2], sizes[-1]), gain=out_gain))
    return nn.Sequential(*layers)


def linear_layers(net: nn.Sequential) -> list[tuple[str, nn.Linear]]:
    """Return ``(name, layer)`` for every ``nn.Linear`` of ``net``, in order.

    The names are the ``nn.Sequential`` indices (``"0"``, ``"2"``, ...), which are also the
    prefixes of the layer's keys in ``net.state_dict()``.
    """
    children = net.named_children()
    return [(name, module) for name, module in children if isinstance(module, nn.Linear)]
