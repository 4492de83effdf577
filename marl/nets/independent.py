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
from collections.abc import Mapping, Sequence
from typing import cast

import torch
from torch import nn

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


class IndependentNets(nn.Module):
    """One MLP per agent: ``[*B, A, F] -> [*B, A, O]``, agent ``i`` sees only ``x[..., i, :]``.

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

    def per_agent_parameters(self) -> list[list[nn.Parameter]]:
        """Return agent ``i``'s parameters as list ``i``, e.g. for one optimiser per agent.

        Raises:
            RuntimeError: for the ``batched`` backend, whose parameters are shared tensors.
        """
        if self.backend == "batched":
            raise RuntimeError(
                "per_agent_parameters() needs backend='loop' or backend='fork': the 'batched' "
                "backend stacks all agents' weights into [A, ...] tensors, so no parameter "
                "belongs to a single agent and one optimiser per agent is impossible. "
                "Build IndependentNets(..., backend='loop') (load_stacked() moves weights "
                "across), or use one optimiser over parameters(): Adam is elementwise, so "
                "without gradient clipping each agent gets the update its own Adam would give."
            )
        return [list(net.parameters()) for net in self._agent_nets()]

    def get_agent_state(self, agent: int) -> dict[str, torch.Tensor]:
        """Return a copy of agent ``agent``'s weights as a state dict of its ``mlp()``.

        The result loads into ``mlp(in_features, hidden, out_features, ...)`` with
        ``load_state_dict`` whatever the backend.
        """
        self._check_agent(agent)
        if isinstance(self.core, StackedMLP):
            state = self.core.agent_state(agent)
        else:
            state = self._agent_nets()[agent].state_dict()
        return {key: value.detach().clone() for key, value in state.items()}

    def set_agent_state(self, agent: int, state: Mapping[str, torch.Tensor]) -> None:
        """Copy ``state`` (a state dict of one agent's ``mlp()``) into agent ``agent``.

        Raises:
            ValueError: if keys or shapes differ from the ``mlp()`` this group was built with.
        """
        self._check_agent(agent)
        self._check_state(state, leading=())
        if isinstance(self.core, StackedMLP):
            target = self.core.agent_state(agent)
        else:
            target = self._agent_nets()[agent].state_dict()
        with torch.no_grad():
            for key, value in target.items():
                value.copy_(state[key])

    def export_stacked(self) -> dict[str, torch.Tensor]:
        """Return the canonical weights: every agent's ``mlp()`` state stacked, ``[A, ...]``.

        Keys are those of one agent's ``mlp().state_dict()`` (``"0.weight": [A, out, in]``,
        ``"0.bias": [A, out]``, ...), whatever the backend; the tensors are copies.
        """
        states = [self.get_agent_state(agent) for agent in range(self.num_agents)]
        return {key: torch.stack([state[key] for state in states]) for key in states[0]}

    def load_stacked(self, stacked: Mapping[str, torch.Tensor]) -> None:
        """Load canonical weights from :meth:`export_stacked` (of any backend).

        Raises:
            ValueError: if keys differ or a tensor is not ``[A, *shape of one agent's]``.
        """
        self._check_state(stacked, leading=(self.num_agents,))
        for agent in range(self.num_agents):
            self.set_agent_state(agent, {key: value[agent] for key, value in stacked.items()})

    def tie_to(self, net: nn.Module) -> None:
        """Give every agent a copy of ``net``'s weights (an ``mlp()`` of the same sizes).

        Afterwards this module computes what ``net`` computes on every agent, e.g. what a
        :class:`~marl.nets.shared.SharedNet` without agent ID computes; the copies are
        independent and diverge under training.
        """
        state = net.state_dict()
        for agent in range(self.num_agents):
            self.set_agent_state(agent, state)

    def _agent_nets(self) -> list[nn.Module]:
        """Per-agent modules of the ``loop`` and ``fork`` backends (fetched, not cached,
        so the list stays right after ``copy.deepcopy`` or ``load_state_dict``)."""
        # The scripted runner keeps its agents in `.nets`. Script modules support neither
        # get_submodule nor, after deepcopy, iteration or indexing; named_children always works.
        nets = self.core if self.backend == "loop" else cast(nn.Module, self.core.nets)
        return [net for _, net in nets.named_children()]

    def _check_agent(self, agent: int) -> None:
        if not 0 <= agent < self.num_agents:
            raise IndexError(f"agent must be in [0, {self.num_agents}); got {agent}.")

    def _check_state(self, state: Mapping[str, torch.Tensor], leading: tuple[int, ...]) -> None:
        """Check keys and shapes of one agent's state (``leading=()``) or a stacked one."""
        if set(state) != set(self._state_shapes):
            raise ValueError(
                f"state keys must be {sorted(self._state_shapes)} (one agent's mlp() state "
                f"dict, stacked for load_stacked); got {sorted(state)}."
            )
        for key, expected in self._state_shapes.items():
            if state[key].shape != (*leading, *expected):
                raise ValueError(
                    f"state[{key!r}] must have shape {[*leading, *expected]}; "
                    f"got {list(state[key].shape)}."
                )

    def extra_repr(self) -> str:
        return f"num_agents={self.num_agents}, backend={self.backend!r}"
