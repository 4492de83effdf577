"""Recurrent group networks: ``trunk -> GRU -> head`` per agent, shared or independent.

The layout is EPyMARL's recurrent agent (``Linear -> act -> GRUCell -> Linear``): input
layers with the sizes of ``hidden`` (default one layer of ``rnn_hidden``), a GRU of size
``rnn_hidden``, a linear head with orthogonal gain ``out_gain``. Every form maps a whole
sequence::

    forward(obs: [T, B, A, F], hidden: [B, A, H], first: [T, B, A], alive: [T, B, A] | None)
        -> (out: [T, B, A, O], hidden_last: [B, A, H])

The state is zeroed before step ``t`` wherever ``first[t]`` (the agent's first step of an
episode) and left unchanged wherever ``alive[t]`` is false (a dead step; its output is the
head applied to the unchanged state, finite as long as the padded input is). The state is
passed in and returned, never stored in the module: the learner owns it, one ``[E, A, H]``
per group, and stores it at the start of each training chunk. ``step`` is the same call
for one time step.

Forms, as for the MLPs (``marl.nets.shared``, ``marl.nets.independent``):

- :class:`SharedGRU`: one network for all agents, a one-hot agent ID appended to the
  input; agents are rows of the same calls.
- :class:`IndependentGRUs`: one network per agent, run by the ``batched`` backend (weights
  stacked ``[A, ...]``: per time step one ``baddbmm`` for the recurrent half of all agents'
  gates), ``fork`` (TorchScript tasks, ``torch.jit.fork`` per agent) or ``loop`` (the
  reference). Weights move between backends through the canonical stacked form of
  :class:`~marl.nets._agent_weights.AgentWeights`: one :class:`GRUAgent` state dict per
  agent (``trunk.0.weight``, ``gru.weight_ih``, ..., ``head.0.weight``), stacked.

In every form the trunk and the input half of the GRU run once over all ``T`` steps; only
the recurrent half loops over time (:func:`~marl.nets._gru.gru_scan`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple, cast

import torch
from torch import Tensor, nn

from marl.nets._agent_weights import AgentWeights
from marl.nets._checks import check_choice, check_positive, check_shape
from marl.nets._fork import script_quietly
from marl.nets._gru import GRUAgent, GRUForkRunner, gru_scan
from marl.nets.independent import BACKENDS
from marl.nets.shared import append_agent_id
from marl.nets.stacked_gru import StackedGRUAgents

RNN_HIDDEN = 64
"""Default GRU size ``H`` (EPyMARL uses 64 too)."""


class ScanInputs(NamedTuple):
    """The arguments of :func:`~marl.nets._gru.gru_scan`, in its order (``G`` GRUs, ``T``
    steps, ``N`` rows): ``gates_in [G, T, N, 3H]``, ``hidden [G, N, H]``, ``keep [G, T,
    N, 1]``, ``alive [G, T, N, 1]`` or ``None``, ``weight_hh [G, H, 3H]``,
    ``bias_hh [G, 1, 3H]``."""

    gates_in: Tensor
    hidden: Tensor
    keep: Tensor
    alive: Tensor | None
    weight_hh: Tensor
    bias_hh: Tensor


class RecurrentGroupNet(nn.Module):
    """What both recurrent forms share: input checks, :meth:`step`, :meth:`initial_hidden`.

    Attributes:
        in_features: ``F``; out_features: ``O``; num_agents: ``A``; hidden_size: ``H``.
    """

    def __init__(
        self, in_features: int, out_features: int, num_agents: int, rnn_hidden: int
    ) -> None:
        super().__init__()
        check_positive("num_agents", num_agents)
        check_positive("rnn_hidden", rnn_hidden)
        self.in_features = in_features
        self.out_features = out_features
        self.num_agents = num_agents
        self.hidden_size = rnn_hidden

    def unroll(
        self, obs: Tensor, hidden: Tensor, first: Tensor, alive: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Run a sequence and keep the state after every step; implemented by each form.

        Args:
            obs: ``[T, B, A, F]``.
            hidden: ``[B, A, H]``, the state before step 0.
            first: ``[T, B, A]`` bool, true at an agent's first step of an episode.
            alive: ``[T, B, A]`` bool or ``None`` (all alive).

        Returns:
            ``out: [T, B, A, O]`` and ``states: [T, B, A, H]``, the state after each step
            (``states[t]`` is what produced ``out[t]``).
        """
        raise NotImplementedError

    def scan_inputs(
        self, obs: Tensor, hidden: Tensor, first: Tensor, alive: Tensor | None = None
    ) -> ScanInputs | None:
        """:meth:`unroll`'s work before the recurrence: the arguments of
        :func:`~marl.nets._gru.gru_scan` for ``G`` GRUs over ``N`` rows; ``None`` for forms
        that run one call per agent (``fork``, ``loop``). With :meth:`scan_outputs` this
        lets :func:`unroll_together` run several networks' recurrences as one."""
        return None

    def scan_outputs(self, states: Tensor, batch: int) -> tuple[Tensor, Tensor]:
        """:meth:`unroll`'s work after the recurrence: ``states: [G, T, N, H]`` from the
        scan -> ``(out: [T, B, A, O], states: [T, B, A, H])``."""
        raise NotImplementedError

    def forward(
        self, obs: Tensor, hidden: Tensor, first: Tensor, alive: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Run a sequence (see the module docstring): :meth:`unroll` with its last state.

        Returns:
            ``out: [T, B, A, O]`` and ``hidden_last: [B, A, H]``, the state after step
            ``T - 1``.
        """
        out, states = self.unroll(obs, hidden, first, alive)
        return out, states[-1]

    def from_states(self, obs: Tensor, states: Tensor) -> Tensor:
        """One step from each of many given states, no reset: ``[*S, B, A, F] -> [*S, B, A, O]``.

        With ``states`` from :meth:`unroll` and ``obs`` the observations each transition
        returned before any auto-reset (``final_obs``), this is the output for the next
        observation of every step in one call: what a value bootstrapped at a truncation,
        or an n-step target, needs.

        Args:
            obs: ``[*S, B, A, F]``; states: ``[*S, B, A, H]`` (same leading shape).
        """
        lead = obs.shape[:-2]
        rows = obs.reshape(1, -1, self.num_agents, obs.shape[-1])
        hidden = states.reshape(-1, self.num_agents, self.hidden_size)
        first = torch.zeros(rows.shape[:-1], dtype=torch.bool, device=obs.device)
        out, _ = self.unroll(rows, hidden, first)
        return out.reshape(*lead, self.num_agents, self.out_features)

    def step(
        self, obs: Tensor, hidden: Tensor, first: Tensor, alive: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """One time step: :meth:`forward` with ``T = 1``.

        Args:
            obs: ``[B, A, F]``; hidden: ``[B, A, H]``; first: ``[B, A]`` bool;
            alive: ``[B, A]`` bool or ``None``.

        Returns:
            ``out: [B, A, O]`` and the new state ``[B, A, H]``.
        """
        owner, layout = type(self).__name__, "[batch, num_agents, in_features]"
        check_shape(obs, ("B", self.num_agents, self.in_features), "obs", owner, layout)
        out, hidden = self(
            obs.unsqueeze(0),
            hidden,
            first.unsqueeze(0),
            None if alive is None else alive.unsqueeze(0),
        )
        return out[0], hidden

    def initial_hidden(
        self, batch: int, device: torch.device | None = None, dtype: torch.dtype | None = None
    ) -> Tensor:
        """Zeros ``[batch, A, H]``, on the device and dtype of the parameters by default."""
        parameter = next(self.parameters())
        return torch.zeros(
            batch,
            self.num_agents,
            self.hidden_size,
            device=parameter.device if device is None else device,
            dtype=parameter.dtype if dtype is None else dtype,
        )

    def _check_inputs(
        self, obs: Tensor, hidden: Tensor, first: Tensor, alive: Tensor | None
    ) -> None:
        """Check the shapes and dtypes of :meth:`forward`'s arguments."""
        owner = type(self).__name__
        layout = "[time, batch, num_agents, in_features]; keep the agent axis, do not fold it"
        check_shape(obs, ("T", "B", self.num_agents, self.in_features), "obs", owner, layout)
        steps, batch = obs.shape[:2]
        if steps == 0:
            raise ValueError(f"{owner} needs at least one time step; got obs {list(obs.shape)}.")
        layout = "[batch, num_agents, hidden_size]; initial_hidden(batch) gives zeros"
        check_shape(hidden, (batch, self.num_agents, self.hidden_size), "hidden", owner, layout)
        for name, mask in (("first", first), ("alive", alive)):
            if mask is None:
                continue
            layout = "[time, batch, num_agents], like obs without the features"
            check_shape(mask, (steps, batch, self.num_agents), name, owner, layout)
            if mask.dtype != torch.bool:
                raise ValueError(
                    f"{owner} expected {name} to be a bool tensor, got {mask.dtype}; "
                    f"pass {name}.bool()."
                )


def _input_layers(hidden: Sequence[int] | None, rnn_hidden: int) -> list[int]:
    """The trunk sizes: ``hidden``, or EPyMARL's one layer of ``rnn_hidden`` when ``None``."""
    return [rnn_hidden] if hidden is None else list(hidden)


class SharedGRU(RecurrentGroupNet):
    """One :class:`GRUAgent` for all ``A`` agents; a one-hot agent ID joins the input.

    Attributes:
        agent: the shared network; its input size is ``F + A`` with ``agent_id``, else ``F``.
        agent_eye: ``[A, A]`` identity (non-persistent buffer), row ``i`` agent ``i``'s ID.
    """

    agent_eye: Tensor

    def __init__(
        self,
        in_features: int,
        out_features: int,
        num_agents: int,
        hidden: Sequence[int] | None = None,
        rnn_hidden: int = RNN_HIDDEN,
        activation: str = "tanh",
        out_gain: float = 1.0,
        agent_id: bool = True,
    ) -> None:
        """Build the shared network; arguments as for :func:`marl.nets.make_recurrent_group_net`."""
        super().__init__(in_features, out_features, num_agents, rnn_hidden)
        self.agent_id = agent_id
        extra = num_agents if agent_id else 0
        self.agent = GRUAgent(
            in_features + extra,
            out_features,
            _input_layers(hidden, rnn_hidden),
            rnn_hidden,
            activation,
            out_gain,
        )
        self.register_buffer("agent_eye", torch.eye(num_agents), persistent=False)

    def unroll(
        self, obs: Tensor, hidden: Tensor, first: Tensor, alive: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """See :meth:`RecurrentGroupNet.unroll`; agents are rows ``B * A`` of one network."""
        inputs = self.scan_inputs(obs, hidden, first, alive)
        return self.scan_outputs(gru_scan(*inputs), obs.shape[1])

    def scan_inputs(
        self, obs: Tensor, hidden: Tensor, first: Tensor, alive: Tensor | None = None
    ) -> ScanInputs:
        """See :meth:`RecurrentGroupNet.scan_inputs`: ``G = 1``, ``N = B * A`` rows."""
        self._check_inputs(obs, hidden, first, alive)
        steps, batch = obs.shape[:2]
        rows = batch * self.num_agents
        if self.agent_id:
            obs = append_agent_id(obs, self.agent_eye)
        return ScanInputs(*self.agent.scan_inputs(
            obs.reshape(steps, rows, obs.shape[-1]),
            hidden.reshape(rows, self.hidden_size),
            first.reshape(steps, rows),
            None if alive is None else alive.reshape(steps, rows),
        ))

    def scan_outputs(self, states: Tensor, batch: int) -> tuple[Tensor, Tensor]:
        """See :meth:`RecurrentGroupNet.scan_outputs`."""
        steps = states.shape[1]
        out = self.agent.heads(states[0])
        return (
            out.reshape(steps, batch, self.num_agents, self.out_features),
            states[0].reshape(steps, batch, self.num_agents, self.hidden_size),
        )

    def per_agent_parameters(self) -> list[list[nn.Parameter]]:
        """One list holding all parameters: shared parameters belong to every agent."""
        return [list(self.parameters())]

    def extra_repr(self) -> str:
        return f"num_agents={self.num_agents}, agent_id={self.agent_id}"


class IndependentGRUs(AgentWeights, RecurrentGroupNet):
    """One :class:`GRUAgent` per agent; agent ``i`` sees only ``obs[..., i, :]`` (and,
    with ``agent_id``, its one-hot ID).

    Attributes:
        backend: ``"batched"``, ``"fork"`` or ``"loop"``.
        core: :class:`StackedGRUAgents` (``batched``), a scripted :class:`GRUForkRunner`
            (``fork``) or an ``nn.ModuleList`` of :class:`GRUAgent` (``loop``).
    """

    agent_module = "GRUAgent"
    agent_eye: Tensor

    def __init__(
        self,
        in_features: int,
        out_features: int,
        num_agents: int,
        hidden: Sequence[int] | None = None,
        rnn_hidden: int = RNN_HIDDEN,
        activation: str = "tanh",
        out_gain: float = 1.0,
        backend: str = "batched",
        agent_id: bool = False,
    ) -> None:
        """Build ``num_agents`` networks, one after another, and hand them to ``backend``.

        Built under the same seed, every backend starts from the same weights. Arguments
        as for :func:`marl.nets.make_recurrent_group_net`; ``agent_id`` appends the one-hot
        agent ID to every agent's input (selective sharing, where agents share networks).
        """
        super().__init__(in_features, out_features, num_agents, rnn_hidden)
        check_choice("backend", backend, BACKENDS)
        self.backend = backend
        self.agent_id = agent_id
        self.register_buffer("agent_eye", torch.eye(num_agents), persistent=False)
        layers = _input_layers(hidden, rnn_hidden)
        extra = num_agents if agent_id else 0
        agents = [
            GRUAgent(in_features + extra, out_features, layers, rnn_hidden, activation, out_gain)
            for _ in range(num_agents)
        ]
        self._state_shapes = {key: value.shape for key, value in agents[0].state_dict().items()}
        self.core: nn.Module
        if backend == "batched":
            self.core = StackedGRUAgents(agents, activation)
        elif backend == "fork":
            self.core = script_quietly(GRUForkRunner(agents))
        else:
            self.core = nn.ModuleList(agents)

    def unroll(
        self, obs: Tensor, hidden: Tensor, first: Tensor, alive: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """See :meth:`RecurrentGroupNet.unroll`; agent ``i`` runs its own network."""
        inputs = self.scan_inputs(obs, hidden, first, alive)
        if inputs is not None:  # batched
            return self.scan_outputs(gru_scan(*inputs), obs.shape[1])
        if self.agent_id:
            obs = append_agent_id(obs, self.agent_eye)
        if self.backend == "fork":
            return cast(tuple[Tensor, Tensor], self.core(obs, hidden, first, alive))
        results = [
            net(
                obs[:, :, agent],
                hidden[:, agent],
                first[:, :, agent],
                None if alive is None else alive[:, :, agent],
            )
            for agent, net in enumerate(cast(nn.ModuleList, self.core))
        ]
        out = torch.stack([result[0] for result in results], dim=2)
        return out, torch.stack([result[1] for result in results], dim=2)

    def scan_inputs(
        self, obs: Tensor, hidden: Tensor, first: Tensor, alive: Tensor | None = None
    ) -> ScanInputs | None:
        """See :meth:`RecurrentGroupNet.scan_inputs`: ``G = A``, ``N = B`` (``batched``)."""
        self._check_inputs(obs, hidden, first, alive)
        if self.backend != "batched":
            return None
        if self.agent_id:
            obs = append_agent_id(obs, self.agent_eye)
        core = cast(StackedGRUAgents, self.core)
        # Agent axis first once for the whole sequence, back once at the end.
        return ScanInputs(
            core.input_gates(obs.permute(2, 0, 1, 3)),
            hidden.transpose(0, 1),
            (~first).to(obs.dtype).permute(2, 0, 1).unsqueeze(-1),
            None if alive is None else alive.permute(2, 0, 1).unsqueeze(-1),
            core.gru.weight_hh,
            core.gru.bias_hh,
        )

    def scan_outputs(self, states: Tensor, batch: int) -> tuple[Tensor, Tensor]:
        """See :meth:`RecurrentGroupNet.scan_outputs`."""
        out = cast(StackedGRUAgents, self.core).heads(states)
        return out.permute(1, 2, 0, 3), states.permute(1, 2, 0, 3)

    def extra_repr(self) -> str:
        return f"num_agents={self.num_agents}, backend={self.backend!r}, agent_id={self.agent_id}"


def unroll_together(
    nets: Sequence[RecurrentGroupNet],
    obs: Sequence[Tensor],
    hidden: Sequence[Tensor],
    first: Tensor,
    alive: Tensor | None = None,
) -> list[tuple[Tensor, Tensor]]:
    """``[net.unroll(x, h, first, alive) for ...]``, with the recurrences in one scan.

    The per-step cost of a scan on agent-sized tensors is kernel launches, not
    arithmetic, so networks over the same sequences (a policy and its critic) whose forms
    expose :meth:`RecurrentGroupNet.scan_inputs` with equal ``N`` and ``H`` run their
    recurrences stacked along ``G``: one scan instead of one per network, same results.
    Other combinations are unrolled one by one.
    """
    inputs = [net.scan_inputs(x, h, first, alive) for net, x, h in zip(nets, obs, hidden,
                                                                        strict=True)]
    joinable = [part for part in inputs if part is not None]
    if len(joinable) < len(nets) or len({part.hidden.shape[1:] for part in joinable}) > 1:
        return [net.unroll(x, h, first, alive) for net, x, h in zip(nets, obs, hidden,
                                                                     strict=True)]
    alive_all = None
    if any(part.alive is not None for part in joinable):  # a missing mask: all alive
        alive_all = torch.cat([torch.ones_like(part.keep, dtype=torch.bool) if part.alive is None
                               else part.alive
                               for part in joinable])
    states = gru_scan(
        torch.cat([part.gates_in for part in joinable]),
        torch.cat([part.hidden for part in joinable]),
        torch.cat([part.keep for part in joinable]),
        alive_all,
        torch.cat([part.weight_hh for part in joinable]),
        torch.cat([part.bias_hh for part in joinable]),
    )
    sizes = [part.hidden.shape[0] for part in joinable]
    batch = obs[0].shape[1]
    return [net.scan_outputs(part, batch)
            for net, part in zip(nets, states.split(sizes), strict=True)]
