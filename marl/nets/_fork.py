"""The TorchScript runner behind ``IndependentNets(backend="fork")``.

Kept in its own module without ``from __future__ import annotations``: TorchScript compiles
``forward`` from source and needs the annotations as real types, not strings.
"""

import warnings
from collections.abc import Sequence

import torch
from torch import nn


class ForkRunner(nn.Module):
    """Run one MLP per agent as parallel TorchScript tasks: ``[N, A, F] -> [N, A, O]``.

    ``torch.jit.fork`` only runs tasks in parallel from compiled code (in eager Python it
    calls the function at once), so this module is meant to be used through
    :func:`script_fork_runner`, which scripts it together with every agent's MLP.

    Attributes:
        nets: one ``nn.Sequential`` per agent (TorchScript modules once scripted).
    """

    def __init__(self, nets: Sequence[nn.Module]) -> None:
        super().__init__()
        self.nets = nn.ModuleList(nets)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Fork one task per agent on ``x[:, i]`` and stack the results.

        Args:
            x: ``[N, A, F]``, agent axis second.

        Returns:
            ``[N, A, O]``.
        """
        futures: list[torch.jit.Future[torch.Tensor]] = []
        for index, net in enumerate(self.nets):
            futures.append(torch.jit.fork(net, x.select(1, index)))
        return torch.stack([torch.jit.wait(future) for future in futures], dim=1)


def script_fork_runner(nets: Sequence[nn.Module]) -> nn.Module:
    """Script a :class:`ForkRunner` over ``nets`` (each agent's MLP is scripted with it).

    The parameters of ``nets`` are reused, not copied. Autograd records through the forked
    tasks, so the scripted runner is trainable.
    """
    return script_quietly(ForkRunner(nets))


def script_quietly(module: nn.Module) -> nn.Module:
    """``torch.jit.script(module)`` without the deprecation warning; parameters are reused."""
    with warnings.catch_warnings():
        # TorchScript is deprecated upstream, but jit.fork is the point of the fork backends:
        # users ask for it and benchmark it (benchmarks/backends.py). Warn once in the docs
        # of IndependentNets instead of on every construction.
        warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.*deprecated")
        scripted: nn.Module = torch.jit.script(module)
    return scripted
