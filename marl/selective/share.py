"""K networks for A agents on any stacked group network, by a gather of its parameters.

A group network of the independent ``batched`` form holds every parameter stacked over
its ``A`` agents along the first axis: ``[A * s, ...]``, agent ``a``'s block rows
``a * s .. (a + 1) * s`` (``[A, in, out]`` linear stacks have ``s = 1``; a grouped
convolution's ``[A * C_out, C_in, kh, kw]`` has ``s = C_out``). :func:`share_networks` turns
such a network into a selective one: each of those parameters becomes a stack of ``K``
blocks ``[K * s, ...]`` (the trained parameter, what the optimiser steps and checkpoints
hold), and the ``[A * s, ...]`` tensor the network computes with is the gather
``stack[index]`` (a :mod:`torch.nn.utils.parametrize` parametrization). The network keeps
its one batched call over ``A`` agents, whatever its layers are (MLP, CNN, entity
encoder, GRU); the backward pass of the gather sums the gradients of the agents of one
network into that network's block, so an agent's loss moves only its cluster's network.

``K = 1`` (``index`` all zeros) is one network for every agent: with the one-hot agent ID
in its input it computes what a shared network with IDs computes (the warm-up form).
``K = A`` with ``index = arange(A)`` is the independent network itself.
:func:`set_index` moves a network from one assignment to another, each new network
starting as a copy of a chosen old one (after the warm-up: every network a copy of the one
warm-up network), and carries the optimiser's per-parameter state along the same way.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import NamedTuple, cast

import torch
from torch import nn
from torch.nn.utils import parametrize

from marl.selective._checks import check_index


class GatherNetworks(nn.Module):
    """The parametrization ``[K * s, ...] -> [A * s, ...]``: agent ``a`` gets block
    ``index[a]`` of the stack.

    Attributes:
        index: ``[A]`` int64 buffer, agent -> network (saved in checkpoints).
        group: the agent group it belongs to (for :func:`iter_stacks`).
    """

    index: torch.Tensor
    rows: torch.Tensor

    def __init__(self, index: torch.Tensor, block: int, group: str) -> None:
        super().__init__()
        self.register_buffer("index", index.clone())
        self.block = block
        self.group = group
        # The stack's rows each agent takes, [A * s], rebuilt whenever `index` changes in
        # place (set_index, load_state_dict): one index_select, no reshapes, per access.
        # A buffer, so it moves with the module.
        self.register_buffer("rows", self._rows(), persistent=False)
        self._rows_version = self.index._version

    @property
    def num_agents(self) -> int:
        return int(self.index.numel())

    def _rows(self) -> torch.Tensor:
        offsets = torch.arange(self.block, device=self.index.device)
        return (self.index.unsqueeze(1) * self.block + offsets).reshape(-1)

    def forward(self, stack: torch.Tensor) -> torch.Tensor:
        if self.index._version != self._rows_version:
            self.rows = self._rows()
            self._rows_version = self.index._version
        return stack.index_select(0, self.rows)

    def right_inverse(self, full: torch.Tensor) -> torch.Tensor:
        """The stack from a full ``[A * s, ...]`` tensor: network ``k`` takes the block of
        its first agent (what :func:`share_networks` starts from)."""
        rest = full.shape[1:]
        blocks = full.reshape(self.num_agents, self.block, *rest)
        firsts = first_agents(self.index)
        return blocks.index_select(0, firsts).reshape(firsts.numel() * self.block, *rest)

    def extra_repr(self) -> str:
        return f"group={self.group!r}, block={self.block}, index={self.index.tolist()}"


def first_agents(index: torch.Tensor) -> torch.Tensor:
    """``[K]``: the first agent of each network of ``index: [A]`` (labels ``0 .. K-1``)."""
    num_networks = check_index(index)
    return torch.stack([torch.nonzero(index == k)[0, 0] for k in range(num_networks)])


def share_networks(net: nn.Module, num_agents: int, group: str,
                   index: torch.Tensor | Sequence[int] | None = None) -> nn.Module:
    """Make the stacked network ``net`` of ``num_agents`` agents selective, in place.

    Args:
        net: a group network whose every parameter stacks agents along its first axis
            (the independent ``batched`` form of any encoder, trunk or GRU).
        num_agents: ``A``.
        group: the group's name, kept on each parametrization.
        index: ``[A]`` agent -> network; default all zeros (one network, the warm-up form).
            Network ``k`` starts from the weights of its first agent in ``net``.

    Returns:
        ``net``, whose parameters are now ``[K * s, ...]`` stacks.

    Raises:
        ValueError: for a malformed index, or a parameter not stacked over the agents.
    """
    index = torch.zeros(num_agents, dtype=torch.int64) if index is None else torch.as_tensor(
        index, dtype=torch.int64)
    check_index(index)
    if index.numel() != num_agents:
        raise ValueError(f"index must give one network per agent ({num_agents}); got "
                         f"{index.tolist()}.")
    index = index.to(next(net.parameters()).device)
    for module_name, module in list(net.named_modules()):
        for name, parameter in list(module.named_parameters(recurse=False)):
            if parameter.dim() == 0 or parameter.shape[0] % num_agents:
                raise ValueError(
                    f"parameter {module_name}.{name} of shape {list(parameter.shape)} is not "
                    f"stacked over {num_agents} agents along its first axis; selective "
                    "sharing needs the independent 'batched' form of the network.")
            block = parameter.shape[0] // num_agents
            parametrize.register_parametrization(
                module, name, GatherNetworks(index, block, group), unsafe=True)
    return net


class Stack(NamedTuple):
    """One selective stack of a module: where it lives and its gather."""

    prefix: str
    """The owning submodule's name in the module (``""`` for the module itself)."""
    name: str
    """The parameter's name in its submodule."""
    entry: parametrize.ParametrizationList
    gather: GatherNetworks

    @property
    def parameter(self) -> nn.Parameter:
        """The trained ``[K * s, ...]`` stack."""
        return cast(nn.Parameter, self.entry.original)

    @property
    def index_key(self) -> str:
        """The state-dict key of this stack's index buffer."""
        dotted = f"{self.prefix}." if self.prefix else ""
        return f"{dotted}parametrizations.{self.name}.0.index"


def iter_stacks(module: nn.Module, group: str | None = None) -> Iterator[Stack]:
    """Every selective stack in ``module`` (of ``group``, or of any group)."""
    for prefix, sub in module.named_modules():
        parametrizations = getattr(sub, "parametrizations", None)
        if not isinstance(parametrizations, nn.ModuleDict):
            continue
        for name, entry in parametrizations.items():
            entry = cast(parametrize.ParametrizationList, entry)
            gather = entry[0]
            if isinstance(gather, GatherNetworks) and group in (None, gather.group):
                yield Stack(prefix, name, entry, gather)


def group_index(module: nn.Module, group: str) -> torch.Tensor | None:
    """The agent -> network index of ``group``'s selective networks in ``module``, or None."""
    for stack in iter_stacks(module, group):
        return stack.gather.index.detach().cpu().clone()
    return None


class Swap(NamedTuple):
    """One stack that :func:`set_index` replaced: the old and the new parameter, and how
    a tensor of the old one's shape (an optimiser moment) maps onto the new one."""

    old: nn.Parameter
    new: nn.Parameter
    block: int
    rows: torch.Tensor

    def convert(self, value: torch.Tensor) -> torch.Tensor:
        return _take_blocks(value, self.block, self.rows.to(value.device))


def set_index(modules: Sequence[nn.Module], group: str, index: torch.Tensor | Sequence[int],
              sources: torch.Tensor | Sequence[int] | None = None) -> list[Swap]:
    """Give ``group``'s selective networks in ``modules`` the assignment ``index: [A]``.

    New network ``k`` starts as a copy of old network ``sources[k]`` (default: the old
    network of its first agent). Each stack is a new parameter (a parameter's shape must
    not change under autograd); pass the returned swaps to
    :func:`swap_optimizer_parameters` (or ``CommonOptimizer.swap_parameters``) so the
    optimiser steps the new stacks, from the old ones' moments.

    Raises:
        ValueError: for a malformed index or ``sources``.
    """
    index = torch.as_tensor(index, dtype=torch.int64)
    num_networks = check_index(index)
    swaps: list[Swap] = []
    for module in modules:
        for stack in list(iter_stacks(module, group)):
            gather = stack.gather
            if gather.num_agents != index.numel():
                raise ValueError(f"index must give one network per agent of group {group!r} "
                                 f"({gather.num_agents}); got {index.tolist()}.")
            start = (gather.index.cpu()[first_agents(index)] if sources is None
                     else torch.as_tensor(sources, dtype=torch.int64))
            if start.numel() != num_networks:
                raise ValueError(f"sources must name one old network per new network "
                                 f"({num_networks}); got {start.tolist()}.")
            old = stack.parameter
            rows = start.to(old.device)
            with torch.no_grad():
                new = nn.Parameter(_take_blocks(old.detach(), gather.block, rows),
                                   requires_grad=old.requires_grad)
                gather.index.copy_(index.to(gather.index.device))
            stack.entry.original = new
            swaps.append(Swap(old, new, gather.block, rows))
    return swaps


def swap_optimizer_parameters(optimizer: torch.optim.Optimizer, swaps: Sequence[Swap]) -> None:
    """Make ``optimizer`` step each swap's new parameter in place of its old one, with the
    old one's per-parameter state (Adam's moments) taken block by block."""
    by_id = {id(swap.old): swap for swap in swaps}
    for param_group in optimizer.param_groups:
        params = param_group["params"]
        for position, parameter in enumerate(params):
            swap = by_id.get(id(parameter))
            if swap is None:
                continue
            params[position] = swap.new
            state = optimizer.state.pop(parameter, None)
            if state:
                optimizer.state[swap.new] = {
                    key: swap.convert(value)
                    if isinstance(value, torch.Tensor) and value.shape == parameter.shape
                    else value
                    for key, value in state.items()
                }


def _take_blocks(stack: torch.Tensor, block: int, rows: torch.Tensor) -> torch.Tensor:
    networks = stack.shape[0] // block
    rest = stack.shape[1:]
    taken = stack.reshape(networks, block, *rest).index_select(0, rows)
    return taken.reshape(rows.numel() * block, *rest).contiguous()
