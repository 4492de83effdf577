"""A CNN encoder for image observations ``[H, W, C]``, shared or one per agent.

Observations arrive channels last, as environments give them, and are permuted to channels
first inside. One agent's encoder, :class:`CNNEncoder`, is ``Conv -> ReLU`` per layer, then
one dense ``Linear -> ReLU``, all orthogonally initialised with gain sqrt(2) and zero biases
(Huang et al. 2022, "The 37 Implementation Details of PPO", Atari details). The layers
follow the image size (:func:`default_conv_layers`): Mnih et al. 2015's Nature CNN from
36 pixels on (84 x 84 Atari frames), stride-2 layers for medium images, and padded 3 x 3
layers for small views (a 7 x 7 pursuit view), which keep every cell.

:class:`GroupedCNN` is the ``batched`` form of ``A`` encoders: every conv layer is ONE
grouped convolution over agents (``groups=A``, agents' channels stacked), the dense layer
one ``baddbmm`` (:class:`~marl.nets.independent.StackedMLP`). :func:`make_cnn_encoder`
builds the shared or independent group.

Kept without ``from __future__ import annotations``: the ``fork`` backend scripts
:class:`CNNEncoder`, and TorchScript needs the annotations as real types.
"""

from collections.abc import Sequence
from typing import NamedTuple, cast

import torch
from torch import Tensor, nn
from torch.nn import functional

from marl.nets._checks import check_choice, check_positive
from marl.nets._encoder_group import IndependentEncoders, SharedEncoder
from marl.nets.independent import BACKENDS, StackedMLP
from marl.nets.mlp import HIDDEN_GAIN, mlp

CNN_FEATURES = 64
"""Default output size of the CNN encoder."""


class ConvSpec(NamedTuple):
    """One conv layer: ``channels`` outputs, a ``kernel x kernel`` window, stride, padding."""

    channels: int
    kernel: int
    stride: int
    padding: int


def default_conv_layers(height: int, width: int) -> list[ConvSpec]:
    """Conv layers suited to an ``height x width`` image (see the module docstring)."""
    side = min(height, width)
    if side >= 36:
        return [ConvSpec(32, 8, 4, 0), ConvSpec(64, 4, 2, 0), ConvSpec(64, 3, 1, 0)]
    if side >= 16:
        return [ConvSpec(32, 3, 2, 1), ConvSpec(64, 3, 2, 1), ConvSpec(64, 3, 1, 1)]
    return [ConvSpec(32, 3, 1, 1), ConvSpec(32, 3, 1, 1)]


def conv_output_size(height: int, width: int, layers: Sequence[ConvSpec]) -> tuple[int, int]:
    """The ``(height, width)`` after ``layers``.

    Raises:
        ValueError: when a layer's window does not fit the image it receives.
    """
    for index, spec in enumerate(layers):
        next_height = (height + 2 * spec.padding - spec.kernel) // spec.stride + 1
        next_width = (width + 2 * spec.padding - spec.kernel) // spec.stride + 1
        if next_height < 1 or next_width < 1:
            raise ValueError(
                f"conv layer {index} ({spec}) does not fit its {height} x {width} input; "
                "use smaller kernels or strides, or padding, for images this small."
            )
        height, width = next_height, next_width
    return height, width


def conv_init(conv: nn.Conv2d, gain: float = HIDDEN_GAIN) -> nn.Conv2d:
    """Orthogonal weight (rows: output channels) scaled by ``gain``, zero bias; returns ``conv``."""
    nn.init.orthogonal_(conv.weight, gain)
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)
    return conv


class CNNEncoder(nn.Module):
    """One agent's CNN: ``[M, H, W, C] -> [M, features]``.

    Attributes:
        convs: ``nn.Sequential`` of ``Conv2d -> ReLU`` (convs at even indices).
        dense: ``nn.Sequential`` of one ``nn.Linear`` (as ``mlp(D, (), features)`` builds
            it), followed by a ReLU in :meth:`forward`.
    """

    def __init__(
        self,
        obs_shape: Sequence[int],
        features: int = CNN_FEATURES,
        layers: Sequence[ConvSpec] | None = None,
    ) -> None:
        """Build the encoder for ``obs_shape = (H, W, C)``; ``layers`` default to the size's."""
        super().__init__()
        if len(obs_shape) != 3:
            raise ValueError(
                f"CNNEncoder needs an image observation [H, W, C]; got shape {list(obs_shape)}."
            )
        height, width, channels = (int(size) for size in obs_shape)
        check_positive("features", features)
        specs = list(default_conv_layers(height, width) if layers is None else layers)
        out_height, out_width = conv_output_size(height, width, specs)
        modules: list[nn.Module] = []
        for spec in specs:
            conv = nn.Conv2d(channels, spec.channels, spec.kernel, spec.stride, spec.padding)
            modules += [conv_init(conv), nn.ReLU()]
            channels = spec.channels
        self.convs = nn.Sequential(*modules)
        self.layers = specs
        self.dense = mlp(channels * out_height * out_width, [], features, "relu", HIDDEN_GAIN)

    def forward(self, x: Tensor) -> Tensor:
        """``x: [M, H, W, C]`` (channels last) -> ``[M, features]``."""
        x = self.convs(x.permute(0, 3, 1, 2))
        return torch.relu(self.dense(x.flatten(1)))


class GroupedCNN(nn.Module):
    """``A`` :class:`CNNEncoder` networks in one call per layer: ``[N, A, H, W, C] -> [N, A, O]``.

    Conv layer ``l`` holds ``conv_weight_l: [A * out, in, k, k]`` and ``conv_bias_l:
    [A * out]`` (agent ``a``'s filters at rows ``a * out .. (a + 1) * out``) and runs as a
    convolution with ``groups=A`` on the agents' channels stacked, ``[N, A * C, H, W]``.
    """

    def __init__(self, encoders: Sequence[CNNEncoder]) -> None:
        """Stack the weights of ``encoders`` (one per agent, equal sizes); copies them."""
        super().__init__()
        self.num_agents = len(encoders)
        self.layers = list(encoders[0].layers)
        self._keys = [(f"conv_weight_{i}", f"conv_bias_{i}") for i in range(len(self.layers))]
        convs = [[m for m in encoder.convs if isinstance(m, nn.Conv2d)] for encoder in encoders]
        with torch.no_grad():
            for index, (weight_key, bias_key) in enumerate(self._keys):
                weight = torch.cat([agent_convs[index].weight for agent_convs in convs])
                bias = torch.cat([cast(Tensor, agent[index].bias) for agent in convs])
                self.register_parameter(weight_key, nn.Parameter(weight))
                self.register_parameter(bias_key, nn.Parameter(bias))
        self.dense = StackedMLP([encoder.dense for encoder in encoders], "relu")

    def forward(self, x: Tensor) -> Tensor:
        """``x: [N, A, H, W, C]`` -> ``[N, A, O]``, agent ``a``'s encoder on ``x[:, a]``."""
        rows, agents, height, width, channels = x.shape
        x = x.permute(0, 1, 4, 2, 3).reshape(rows, agents * channels, height, width)
        for spec, (weight_key, bias_key) in zip(self.layers, self._keys, strict=True):
            weight, bias = getattr(self, weight_key), getattr(self, bias_key)
            x = torch.relu(
                functional.conv2d(x, weight, bias, spec.stride, spec.padding, groups=agents)
            )
        # [N, A * C', H', W'] -> [A, N, C' * H' * W']: agent a's block flattened as its own.
        flat = x.reshape(rows, agents, -1).transpose(0, 1)
        return torch.relu(self.dense(flat)).transpose(0, 1)

    def agent_state(self, agent: int) -> dict[str, Tensor]:
        """Agent ``agent``'s weights as a :class:`CNNEncoder` state dict (views)."""
        state: dict[str, Tensor] = {}
        for index, (weight_key, bias_key) in enumerate(self._keys):
            size = self.layers[index].channels
            rows = slice(agent * size, (agent + 1) * size)
            state[f"convs.{2 * index}.weight"] = getattr(self, weight_key)[rows]
            state[f"convs.{2 * index}.bias"] = getattr(self, bias_key)[rows]
        for key, value in self.dense.agent_state(agent).items():
            state[f"dense.{key}"] = value
        return state

    def extra_repr(self) -> str:
        return f"num_agents={self.num_agents}, layers={self.layers}"


def make_cnn_encoder(
    sharing: str,
    obs_shape: Sequence[int],
    num_agents: int,
    features: int = CNN_FEATURES,
    layers: Sequence[ConvSpec] | None = None,
    backend: str = "batched",
) -> SharedEncoder | IndependentEncoders:
    """The CNN encoder of a group: ``[*B, A, H, W, C] -> [*B, A, features]``.

    Args:
        sharing: ``"shared"`` (one CNN for all agents) or ``"independent"`` (one per agent).
        obs_shape: ``(H, W, C)``, one agent's image, channels last.
        num_agents: ``A``.
        features: output size per agent.
        layers: conv layers; ``None`` picks :func:`default_conv_layers` for the image size.
        backend: ``independent`` only: ``"batched"`` (grouped convolutions), ``"fork"``
            or ``"loop"``.
    """
    check_choice("sharing", sharing, ("shared", "independent"))
    check_choice("backend", backend, BACKENDS)
    check_positive("num_agents", num_agents)
    if sharing == "shared":
        encoder = CNNEncoder(obs_shape, features, layers)
        return SharedEncoder(encoder, obs_shape, num_agents, features)
    encoders = [CNNEncoder(obs_shape, features, layers) for _ in range(num_agents)]
    return IndependentEncoders(
        encoders, obs_shape, features, _stack, backend, "CNNEncoder"
    )


def _stack(nets: Sequence[nn.Module]) -> GroupedCNN:
    return GroupedCNN(cast(Sequence[CNNEncoder], nets))
