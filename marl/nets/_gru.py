"""The GRU recurrence and the per-agent recurrent network, written to compile with TorchScript.

Kept in its own module without ``from __future__ import annotations``: the ``fork`` backend
scripts :class:`GRUAgent` and :class:`GRUForkRunner`, and TorchScript compiles them (and
:func:`gru_scan`, which every form of the recurrent network runs) from source, needing the
annotations as real types.

The update is that of ``torch.nn.GRUCell`` (Cho et al. 2014), with ``*`` elementwise::

    r = sigmoid(W_ir x + b_ir + W_hr h + b_hr)
    z = sigmoid(W_iz x + b_iz + W_hz h + b_hz)
    n = tanh(W_in x + b_in + r * (W_hn h + b_hn))
    h' = (1 - z) * n + z * h
"""

import torch
from torch import Tensor, nn

from marl.nets.mlp import ACTIVATIONS, HIDDEN_GAIN, mlp


def gru_scan(
    gates_in: Tensor,
    hidden: Tensor,
    keep: Tensor,
    alive: Tensor | None,
    weight_hh: Tensor,
    bias_hh: Tensor,
) -> Tensor:
    """Run ``G`` independent GRUs (``G`` agents, or 1) over ``T`` steps.

    The input projections ``W_i x + b_i`` arrive precomputed for all steps, so each step
    does one batched matmul (``baddbmm`` over ``G``) and a few elementwise kernels.

    Args:
        gates_in: ``[G, T, N, 3H]``, ``W_i x_t + b_i`` with the gates in ``GRUCell`` order
            (reset, update, new).
        hidden: ``[G, N, H]``, the state before step 0.
        keep: ``[G, T, N, 1]``, 0.0 where the state is zeroed before step ``t`` (the
            agent's first step of an episode), else 1.0.
        alive: ``[G, T, N, 1]`` bool, or ``None`` (all alive); where false the step leaves
            the state unchanged.
        weight_hh: ``[G, H, 3H]``, ``GRUCell.weight_hh`` transposed.
        bias_hh: ``[G, 1, 3H]``.

    Returns:
        ``[G, T, N, H]``, the state after each step.
    """
    size = hidden.shape[-1]
    # Split and unbind once, outside the loop: a per-step slice of a tensor that needs a
    # gradient back-propagates through a zero tensor of the whole input (T of them, O(T^2)
    # memory traffic); unbind's backward is one stack.
    reset_update_in, candidate_in = gates_in.split([2 * size, size], dim=-1)
    reset_update_steps = reset_update_in.unbind(1)
    candidate_steps = candidate_in.unbind(1)
    keep_steps = keep.unbind(1)
    # Over a sequence, one host read saves a kernel per step: most steps start no episode,
    # and most tasks keep every agent alive. A single step (acting) keeps both kernels and
    # reads nothing back, so the rollout never waits on the device.
    resets: list[bool] = [True] * len(candidate_steps)
    if len(candidate_steps) > 1:
        read: list[bool] = (keep < 1.0).flatten(2).any(2).any(0).tolist()
        resets = read
        if alive is not None and bool(alive.all()):
            alive = None
    alive_steps: list[Tensor] = [] if alive is None else list(alive.unbind(1))
    states: list[Tensor] = []
    for t in range(len(candidate_steps)):
        if resets[t]:
            hidden = hidden * keep_steps[t]
        recurrent = torch.baddbmm(bias_hh, hidden, weight_hh)
        recurrent_ru, recurrent_n = recurrent.split([2 * size, size], dim=-1)
        reset, update = torch.sigmoid(reset_update_steps[t] + recurrent_ru).chunk(2, dim=-1)
        candidate = torch.tanh(torch.addcmul(candidate_steps[t], reset, recurrent_n))
        # lerp(n, h, z) = n + z * (h - n) = (1 - z) * n + z * h, in one kernel.
        new = torch.lerp(candidate, hidden, update)
        if alive is not None:
            new = torch.where(alive_steps[t], new, hidden)
        hidden = new
        states.append(hidden)
    return torch.stack(states, dim=1)


def gru_cell_init(cell: nn.GRUCell) -> nn.GRUCell:
    """Initialise ``cell`` in place: each gate's weight block orthogonal (gain 1), biases 0.

    Per gate, so every ``[H, H]`` recurrent block is itself orthogonal (the recurrent
    counterpart of the MLPs' orthogonal init; CleanRL's recurrent PPO uses gain 1 and
    zero biases too). Returns ``cell``.
    """
    for weight in (cell.weight_ih, cell.weight_hh):
        for block in weight.detach().chunk(3, dim=0):
            nn.init.orthogonal_(block, 1.0)
    nn.init.zeros_(cell.bias_ih)
    nn.init.zeros_(cell.bias_hh)
    return cell


def trunk(in_features: int, hidden: list[int], activation: str) -> nn.Sequential:
    """``Linear -> act`` for each size in ``hidden`` (empty: the identity), orthogonal init.

    Built with :func:`~marl.nets.mlp.mlp`, so the linear layers sit at even indices, and
    closed with the activation the MLP leaves off its last layer.
    """
    if not hidden:
        return nn.Sequential()
    layers = mlp(in_features, hidden[:-1], hidden[-1], activation, HIDDEN_GAIN)
    return nn.Sequential(*layers, ACTIVATIONS[activation]())


class GRUAgent(nn.Module):
    """One agent's recurrent network over a sequence: ``trunk -> GRU -> head``.

    ``[T, N, F] -> [T, N, O]``: the trunk (``Linear -> act`` per size in ``hidden``) and the
    input half of the GRU run on all ``T * N`` rows in one call each; only the recurrent
    half loops over time. The head is one linear layer with orthogonal gain ``out_gain``.

    Attributes:
        trunk: the input layers (an empty ``nn.Sequential`` when ``hidden`` is empty).
        gru: an ``nn.GRUCell`` holding the GRU weights (its own ``forward`` is not used).
        head: ``nn.Sequential`` of one ``nn.Linear``, as ``mlp(H, (), O)`` builds it.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        hidden: list[int],
        rnn_hidden: int,
        activation: str,
        out_gain: float,
    ) -> None:
        super().__init__()
        self.trunk = trunk(in_features, hidden, activation)
        gru_in = hidden[-1] if hidden else in_features
        self.gru = gru_cell_init(nn.GRUCell(gru_in, rnn_hidden))
        self.head = mlp(rnn_hidden, [], out_features, activation, out_gain)

    def forward(
        self, obs: Tensor, hidden: Tensor, first: Tensor, alive: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        """Run the sequence; the state is zeroed where ``first`` and held where not ``alive``.

        Args:
            obs: ``[T, N, F]``.
            hidden: ``[N, H]``, the state before step 0.
            first: ``[T, N]`` bool, true at an agent's first step of an episode.
            alive: ``[T, N]`` bool or ``None`` (all alive).

        Returns:
            ``out: [T, N, O]``, the head on the state after each step (at a dead step, on
            the unchanged state), and ``states: [T, N, H]``, the state after each step.
        """
        gates_in, start, keep, agent_alive, weight_hh, bias_hh = self.scan_inputs(
            obs, hidden, first, alive)
        states = gru_scan(gates_in, start, keep, agent_alive, weight_hh, bias_hh)[0]
        return self.heads(states), states

    def scan_inputs(
        self, obs: Tensor, hidden: Tensor, first: Tensor, alive: Tensor | None
    ) -> tuple[Tensor, Tensor, Tensor, Tensor | None, Tensor, Tensor]:
        """The arguments of :func:`gru_scan` (``G = 1``) for :meth:`forward`'s inputs: the
        trunk and the input half of the GRU over all ``T * N`` rows, in one call each."""
        steps, rows = obs.shape[0], obs.shape[1]
        x = self.trunk(obs.reshape(steps * rows, obs.shape[2]))
        # addmm with the transposed weight is one BLAS call for all T * N rows.
        gates_in = torch.addmm(self.gru.bias_ih, x, self.gru.weight_ih.t())
        keep = (~first).to(obs.dtype).reshape(1, steps, rows, 1)
        agent_alive: Tensor | None = None
        if alive is not None:
            agent_alive = alive.reshape(1, steps, rows, 1)
        return (
            gates_in.reshape(1, steps, rows, gates_in.shape[1]),
            hidden.unsqueeze(0),
            keep,
            agent_alive,
            self.gru.weight_hh.t().unsqueeze(0),
            self.gru.bias_hh.unsqueeze(0).unsqueeze(0),
        )

    def heads(self, states: Tensor) -> Tensor:
        """The head on every state: ``[T, N, H] -> [T, N, O]``."""
        steps, rows = states.shape[0], states.shape[1]
        out = self.head(states.reshape(steps * rows, states.shape[2]))
        return out.reshape(steps, rows, out.shape[1])


class GRUForkRunner(nn.Module):
    """Run one :class:`GRUAgent` per agent as parallel TorchScript tasks.

    Meant to be scripted (``torch.jit.fork`` runs tasks in parallel only from compiled
    code); :func:`marl.nets._fork.script_quietly` does that.

    Attributes:
        nets: one :class:`GRUAgent` per agent.
    """

    def __init__(self, nets: list[GRUAgent]) -> None:
        super().__init__()
        self.nets = nn.ModuleList(nets)

    def forward(
        self, obs: Tensor, hidden: Tensor, first: Tensor, alive: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        """Fork one task per agent on its slice of the agent axis; stack the results.

        Args:
            obs: ``[T, N, A, F]``; hidden: ``[N, A, H]``; first: ``[T, N, A]`` bool;
            alive: ``[T, N, A]`` bool or ``None``.

        Returns:
            ``out: [T, N, A, O]`` and ``states: [T, N, A, H]``, the state after each step.
        """
        futures: list[torch.jit.Future[tuple[Tensor, Tensor]]] = []
        for index, net in enumerate(self.nets):
            agent_alive: Tensor | None = None
            if alive is not None:
                agent_alive = alive.select(2, index)
            futures.append(
                torch.jit.fork(
                    net, obs.select(2, index), hidden.select(1, index),
                    first.select(2, index), agent_alive,
                )
            )
        results = [torch.jit.wait(future) for future in futures]
        out = torch.stack([result[0] for result in results], dim=2)
        return out, torch.stack([result[1] for result in results], dim=2)
