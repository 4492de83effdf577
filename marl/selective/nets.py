"""K networks for A agents with a fixed agent -> network index (selective parameter sharing).

Christianos et al. 2021, "Scaling Multi-Agent Reinforcement Learning with Selective
Parameter Sharing": agents are clustered once, and the agents of one cluster share one
network. K = 1 is a :class:`~marl.nets.SharedNet`, K = A with ``index = arange(A)`` is
:class:`~marl.nets.IndependentNets` (``batched``); in between it is the same stacked
machinery, a :class:`~marl.nets.StackedMLP` of K stacks run on all agents in one call.

How the call is batched: each layer's stacked weights ``[K, in, out]`` are gathered by
``index`` into ``[A, in, out]`` and applied with one ``baddbmm``, exactly the batched
independent backend's kernel. The alternative, grouping rows by network (one matmul per
network on its agents' rows, scattered back), needs a Python loop over K; the gather is
one kernel whatever K is (not yet timed in ``benchmarks/``). Its backward pass sums the
gradients of the agents sharing a network into that network's stack, so an agent's loss
moves only its cluster's network.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from marl.nets import SharedNet, StackedMLP, mlp
from marl.nets._checks import check_group_input, check_positive
from marl.nets.mlp import ACTIVATION_FUNCTIONS, ACTIVATIONS
from marl.nets.shared import append_agent_id
from marl.selective._checks import check_index


class SelectiveNet(nn.Module):
    """``K`` MLPs for ``A`` agents: ``[*B, A, F] -> [*B, A, O]``, agent ``a`` runs network
    ``index[a]`` on ``x[..., a, :]`` (with its one-hot agent ID appended if ``agent_id``).

    Attributes:
        stacks: a :class:`StackedMLP` of ``K`` stacks (``weight_l: [K, in, out]``).
        index: ``[A]`` int64 buffer, agent -> network; saved in checkpoints, since a run's
            assignment never changes.
        agent_eye: ``[A, A]`` identity, row ``a`` agent ``a``'s ID (not saved).
    """

    index: torch.Tensor
    agent_eye: torch.Tensor

    def __init__(
        self,
        in_features: int,
        out_features: int,
        index: torch.Tensor | Sequence[int],
        hidden: Sequence[int] = (64, 64),
        activation: str = "tanh",
        out_gain: float = 1.0,
        agent_id: bool = True,
        num_networks: int | None = None,
    ) -> None:
        """Build ``K`` freshly initialised MLPs.

        Args:
            in_features: ``F``, per-agent input features (before the agent ID).
            out_features: ``O``, per-agent outputs.
            index: ``[A]`` agent -> network, labels ``0 .. K-1``.
            hidden: hidden layer sizes.
            activation: ``"tanh"`` or ``"relu"``.
            out_gain: orthogonal gain of the output layer (0.01 policy, 1.0 value).
            agent_id: append a one-hot agent ID, so agents of one cluster can still differ.
            num_networks: ``K``; default ``max(index) + 1``. Every network must have an agent.

        Raises:
            ValueError: for a malformed ``index`` (see :func:`check_index`).
        """
        super().__init__()
        index = torch.as_tensor(index, dtype=torch.int64)
        num_networks = check_index(index, num_networks)
        num_agents = int(index.numel())
        check_positive("num_agents", num_agents)
        self.in_features = in_features
        self.out_features = out_features
        self.num_agents = num_agents
        self.num_networks = num_networks
        self.agent_id = agent_id
        width = in_features + (num_agents if agent_id else 0)
        nets = [mlp(width, hidden, out_features, activation, out_gain) for _ in range(num_networks)]
        self._state_shapes = {key: value.shape for key, value in nets[0].state_dict().items()}
        self.stacks = StackedMLP(nets, activation)
        self._act = ACTIVATION_FUNCTIONS[activation]
        self.register_buffer("index", index.clone())
        self.register_buffer("agent_eye", torch.eye(num_agents), persistent=False)

    @classmethod
    def from_shared(cls, shared: SharedNet, index: torch.Tensor | Sequence[int]) -> SelectiveNet:
        """Start every one of the ``K`` networks as a copy of a trained shared network.

        Why copies of the warm-up network rather than fresh weights: the warm-up already
        learned what all agents have in common (and, through the one-hot IDs, some of what
        sets them apart); starting each cluster there keeps that, and the clusters diverge
        from it as each trains on its own agents' data only. Right after this call the
        selective network computes exactly what ``shared`` computes.

        Args:
            shared: the warm-up :class:`SharedNet` of the group (``A`` agents).
            index: ``[A]`` agent -> network.
        """
        layers = [module for module in shared.mlp if isinstance(module, nn.Linear)]
        hidden = [layer.out_features for layer in layers[:-1]]
        kinds = {type(module) for module in shared.mlp if not isinstance(module, nn.Linear)}
        names = [name for name, kind in ACTIVATIONS.items() if kind in kinds]
        activation = names[0] if names else "tanh"  # no hidden layer: no activation at all
        net = cls(
            shared.in_features, shared.out_features, index, hidden, activation,
            agent_id=shared.agent_id,
        )
        if net.num_agents != shared.num_agents:
            raise ValueError(
                f"index has {net.num_agents} agents but the shared network was built for "
                f"{shared.num_agents}; give one network index per agent of the group."
            )
        state = shared.mlp.state_dict()
        for network in range(net.num_networks):
            net.set_network_state(network, state)
        return net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Run agent ``a``'s network ``index[a]`` on ``x[..., a, :]`` for every agent at once.

        Args:
            x: ``[*B, A, F]`` per-agent inputs.

        Returns:
            ``[*B, A, O]`` per-agent outputs.
        """
        check_group_input(x, self.num_agents, self.in_features, type(self).__name__)
        batch_shape = x.shape[:-2]
        if self.agent_id:
            x = append_agent_id(x, self.agent_eye)
        flat = x.reshape(math.prod(batch_shape), self.num_agents, x.shape[-1]).transpose(0, 1)
        weights, biases = self.stacks.weights, self.stacks.biases
        last = len(weights) - 1
        for layer, (weight, bias) in enumerate(zip(weights, biases, strict=True)):
            # index_select is the gather: [K, in, out] -> [A, in, out], one copy per layer.
            flat = torch.baddbmm(bias.index_select(0, self.index), flat,
                                 weight.index_select(0, self.index))
            if layer < last:
                flat = self._act(flat)
        return flat.transpose(0, 1).reshape(*batch_shape, self.num_agents, self.out_features)

    def get_network_state(self, network: int) -> dict[str, torch.Tensor]:
        """Return a copy of network ``network``'s weights as an ``mlp()`` state dict."""
        self._check_network(network)
        return {k: v.detach().clone() for k, v in self.stacks.agent_state(network).items()}

    def set_network_state(self, network: int, state: Mapping[str, torch.Tensor]) -> None:
        """Copy ``state`` (an ``mlp()`` state dict of the same sizes) into network ``network``.

        Raises:
            ValueError: if keys or shapes differ from the networks of this group.
        """
        self._check_network(network)
        if set(state) != set(self._state_shapes):
            raise ValueError(
                f"state keys must be {sorted(self._state_shapes)} (one mlp() state dict); "
                f"got {sorted(state)}."
            )
        target = self.stacks.agent_state(network)
        with torch.no_grad():
            for key, value in target.items():
                if state[key].shape != self._state_shapes[key]:
                    raise ValueError(
                        f"state[{key!r}] must have shape {list(self._state_shapes[key])}; "
                        f"got {list(state[key].shape)}."
                    )
                value.copy_(state[key])

    def load_stacked(self, stacked: Mapping[str, torch.Tensor]) -> None:
        """Load ``K`` networks' weights stacked along a first axis (``"0.weight": [K, out, in]``,
        the form ``IndependentNets.export_stacked`` returns for ``K`` agents)."""
        for network in range(self.num_networks):
            self.set_network_state(network, {key: value[network] for key, value in stacked.items()})

    def _check_network(self, network: int) -> None:
        if not 0 <= network < self.num_networks:
            raise IndexError(f"network must be in [0, {self.num_networks}); got {network}.")

    def extra_repr(self) -> str:
        return (
            f"num_agents={self.num_agents}, num_networks={self.num_networks}, "
            f"index={self.index.tolist()}, agent_id={self.agent_id}"
        )
