"""One set of parameters per agent, run by one of three interchangeable backends.

- ``"batched"`` (default): every layer's weights are stacked over agents, ``[A, in, out]``,
  and a layer is one ``torch.baddbmm`` for all agents. Fastest by far on CPU
  (README, Results: ``python -m benchmarks.backends``), and one optimiser
  step updates all agents with a single fused kernel.
- ``"fork"``: each agent's MLP is a TorchScript module, run as parallel tasks with
  ``torch.jit.fork`` / ``torch.jit.wait``. Kept because users ask for it and benchmark it;
  TorchScript is deprecated upstream. Run benchmarks of this backend in a fresh process:
  after ``jit.fork`` with 2 threads, later plain work in the same process ran up to 4x
  slower.
- ``"loop"``: a Python loop over per-agent ``nn.Sequential`` MLPs; the reference.

All three compute the same function with the same parameters and, built under the same
seed, start from the same weights: every backend first builds ``num_agents`` MLPs with
:func:`marl.nets.mlp.mlp`, one after another, and the batched backend stacks them.

Weights move between backends through the canonical form returned by
:meth:`IndependentNets.export_stacked`: the per-agent ``mlp()`` state dicts stacked along a
new first axis (``"0.weight": [A, out, in]``, ``"0.bias": [A, out]``, ``"2.weight"``, ...).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import cast

import torch
from torch import nn

from marl.nets._agent_weights import AgentWeights
from marl.nets._checks import check_choice, check_group_input, check_positive
from marl.nets._fork import script_fork_runner
from marl.nets.mlp import ACTIVATION_FUNCTIONS, linear_layers, mlp

BACKENDS = ("batched", "fork", "loop")
"""Allowed values of ``IndependentNets(backend=...)``."""


class StackedMLP(nn.Module):
    """``A`` MLPs as stacked tensors, one ``baddbmm`` per layer: ``[A, N, F] -> [A, N, O]``.

    Layer ``l`` holds ``weight_l: [A, in, out]`` (each agent's ``nn.Linear.weight``
    transposed, so ``baddbmm(bias, h, weight)`` needs no transpose at run time) and
    ``bias_l: [A, 1, out]`` (the singleton broadcasts over the batch rows).

    Attributes:
        layer_names: the ``nn.Sequential`` index of each layer in the per-agent ``mlp()``
            (``"0"``, ``"2"``, ...), used for the canonical state keys.
    """

    def __init__(self, nets: Sequence[nn.Sequential], activation: str) -> None:
        """Stack the linear layers of ``nets`` (one ``mlp()`` per agent); copies the weights."""
        super().__init__()
        per_agent = [linear_layers(net) for net in nets]
        self.layer_names = [name for name, _ in per_agent[0]]
        self.activation = activation
        self._act = ACTIVATION_FUNCTIONS[activation]
        # Plain attributes rather than nn.ParameterList: iterating a ParameterList costs
        # ~10 us per forward, a sixth of the whole call for 8 agents at batch 16.
        self._keys = [(f"weight_{index}", f"bias_{index}") for index in range(len(per_agent[0]))]
        with torch.no_grad():
            for index, (weight_key, bias_key) in enumerate(self._keys):
                layers = [agent_layers[index][1] for agent_layers in per_agent]
                weight = torch.stack([layer.weight.T for layer in layers])
                bias = torch.stack([layer.bias.unsqueeze(0) for layer in layers])
                self.register_parameter(weight_key, nn.Parameter(weight))
                self.register_parameter(bias_key, nn.Parameter(bias))

    @property
    def weights(self) -> list[torch.Tensor]:
        """``weight_l: [A, in, out]`` for every layer ``l``."""
        return [getattr(self, weight_key) for weight_key, _ in self._keys]

    @property
    def biases(self) -> list[torch.Tensor]:
        """``bias_l: [A, 1, out]`` for every layer ``l``."""
        return [getattr(self, bias_key) for _, bias_key in self._keys]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply agent ``a``'s layers to ``x[a]`` for every ``a`` at once.

        Args:
            x: ``[A, N, F]``, agent axis first.

        Returns:
            ``[A, N, O]``.
        """
        last = len(self._keys) - 1
        for index, (weight_key, bias_key) in enumerate(self._keys):
            x = torch.baddbmm(getattr(self, bias_key), x, getattr(self, weight_key))
            if index < last:
                x = self._act(x)
        return x

    def agent_state(self, agent: int) -> dict[str, torch.Tensor]:
        """Return agent ``agent``'s weights as an ``mlp()`` state dict (views, not copies)."""
        state: dict[str, torch.Tensor] = {}
        for name, weight, bias in zip(self.layer_names, self.weights, self.biases, strict=True):
            state[f"{name}.weight"] = weight[agent].T
            state[f"{name}.bias"] = bias[agent, 0]
        return state

    def extra_repr(self) -> str:
        shapes = ", ".join(str(list(weight.shape)) for weight in self.weights)
        return f"weights={shapes}, activation={self.activation!r}"


class IndependentNets(AgentWeights, nn.Module):
    """One MLP per agent: ``[*B, A, F] -> [*B, A, O]``, agent ``i`` sees only ``x[..., i, :]``.

    Weights move per agent and between backends through :class:`AgentWeights`
    (``get_agent_state``, ``export_stacked``, ``load_stacked``, ``tie_to``, ...).

    Attributes:
        backend: ``"batched"``, ``"fork"`` or ``"loop"``.
        core: the module that runs the agents on ``[N, A, F]`` (``batched``: a
            :class:`StackedMLP` on ``[A, N, F]``; ``fork``: a scripted runner; ``loop``: an
            ``nn.ModuleList`` of per-agent MLPs).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        num_agents: int,
        hidden: Sequence[int] = (64, 64),
        activation: str = "tanh",
        out_gain: float = 1.0,
        backend: str = "batched",
    ) -> None:
        """Build ``num_agents`` MLPs and hand them to ``backend``.

        Args:
            in_features: ``F``, per-agent input features.
            out_features: ``O``, per-agent outputs.
            num_agents: ``A``, agents in the group.
            hidden: hidden layer sizes.
            activation: ``"tanh"`` or ``"relu"``.
            out_gain: orthogonal gain of the output layer (0.01 policy, 1.0 value).
            backend: ``"batched"`` (default, fastest), ``"fork"`` or ``"loop"``.

        Raises:
            ValueError: for an unknown ``backend`` or ``activation``, or ``num_agents < 1``.
        """
        super().__init__()
        check_choice("backend", backend, BACKENDS)
        check_positive("num_agents", num_agents)
        self.in_features = in_features
        self.out_features = out_features
        self.num_agents = num_agents
        self.backend = backend
        nets = [
            mlp(in_features, hidden, out_features, activation, out_gain) for _ in range(num_agents)
        ]
        # Kept to validate states handed to set_agent_state / load_stacked.
        self._state_shapes = {key: value.shape for key, value in nets[0].state_dict().items()}
        self.core: nn.Module
        if backend == "batched":
            self.core = StackedMLP(nets, activation)
        elif backend == "fork":
            self.core = script_fork_runner(nets)
        else:
            self.core = nn.ModuleList(nets)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Run agent ``i``'s MLP on ``x[..., i, :]`` for every agent.

        Args:
            x: ``[*B, A, F]`` per-agent inputs.

        Returns:
            ``[*B, A, O]`` per-agent outputs.
        """
        check_group_input(x, self.num_agents, self.in_features, type(self).__name__)
        batch_shape = x.shape[:-2]
        flat = x.reshape(math.prod(batch_shape), self.num_agents, self.in_features)
        if self.backend == "batched":
            # Agent axis first once for the whole stack of bmm calls, back once at the end.
            out = self.core(flat.transpose(0, 1)).transpose(0, 1)
        elif self.backend == "fork":
            out = self.core(flat)
        else:
            nets = cast(nn.ModuleList, self.core)
            out = torch.stack([net(flat[:, i]) for i, net in enumerate(nets)], dim=1)
        return out.reshape(*batch_shape, self.num_agents, self.out_features)

    def extra_repr(self) -> str:
        return f"num_agents={self.num_agents}, backend={self.backend!r}"
