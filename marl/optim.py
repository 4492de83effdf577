"""One common optimiser over every group's parameters, with gradient clipping.

All groups' losses are summed and back-propagated once; this optimiser then steps every
parameter (actors, critics, mixers) together, with one Adam parameter group per agent
group so learning rates can differ per group. Adam is element-wise, so as long as no
clipping couples the groups, one common step equals separate per-agent steps on each
agent's own loss (``tests/test_optim.py`` checks it) while launching far fewer kernels.

The ``per_agent`` mode keeps one Adam per agent instead. It exists so benchmarks can
measure what the common optimiser saves; it needs per-agent parameter tensors (the
``loop`` or ``fork`` backends), since stacked parameters cannot be split between
optimisers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from marl.config import OptimConfig
from marl.selective.share import Swap, swap_optimizer_parameters

_ADAM_KERNELS: dict[str, dict[str, Any]] = {
    "fused": {"fused": True},
    "foreach": {"foreach": True},
    "loop": {"foreach": False},
}
"""``optim.impl`` -> keyword arguments of ``torch.optim.Adam`` (same update, other kernels)."""


class CommonOptimizer:
    """Adam over the parameters of several named modules (one per agent group).

    Args:
        modules: agent group name -> module holding that group's parameters.
        config: learning rate, epsilon, clipping and optimiser mode.
    """

    def __init__(self, modules: Mapping[str, nn.Module], config: OptimConfig) -> None:
        self.config = config
        self.modules = dict(modules)
        self.params = {name: [p for p in m.parameters() if p.requires_grad]
                       for name, m in self.modules.items()}
        if config.impl not in _ADAM_KERNELS:
            raise ValueError(f"optim.impl: expected one of {', '.join(_ADAM_KERNELS)}, got "
                             f"{config.impl!r}")
        kernels = _ADAM_KERNELS[config.impl]
        if config.mode == "common":
            groups = [{"params": params, "name": name} for name, params in self.params.items()]
            self.optimizers = [torch.optim.Adam(groups, lr=config.lr, eps=config.eps, **kernels)]
        elif config.mode == "per_agent":
            self.optimizers = [
                torch.optim.Adam(params, lr=config.lr, eps=config.eps, **kernels)
                for params in _per_agent_parameters(self.modules)
            ]
        else:
            raise ValueError(f"optim.mode: expected 'common' or 'per_agent', got {config.mode!r}")

    def zero_grad(self) -> None:
        for optimizer in self.optimizers:
            optimizer.zero_grad(set_to_none=True)

    def set_lr(self, lr: float) -> None:
        for optimizer in self.optimizers:
            for group in optimizer.param_groups:
                group["lr"] = lr

    def clip_and_step(self) -> dict[str, torch.Tensor]:
        """Clip gradients (global norm, or one norm per group) and step.

        Returns:
            the gradient norms before clipping: ``{"grad_norm": ...}`` in global mode,
            ``{"grad_norm/<group>": ...}`` in group mode (0-d tensors, not synced).
        """
        norms = self.clip()
        for optimizer in self.optimizers:
            optimizer.step()
        return norms

    def clip(self) -> dict[str, torch.Tensor]:
        max_norm = self.config.max_grad_norm
        limit = float("inf") if max_norm is None else max_norm
        return {name: nn.utils.clip_grad_norm_(params, limit)
                for name, params in self.clip_groups().items()}

    def clip_groups(self) -> dict[str, list[nn.Parameter]]:
        """The parameters under each clipping norm, by the norm's logged name: all of
        them under ``grad_norm`` in global mode, each group's under
        ``grad_norm/<group>`` in group mode."""
        if self.config.clip_mode == "group":
            return {f"grad_norm/{name}": params for name, params in self.params.items()}
        return {"grad_norm": [p for params in self.params.values() for p in params]}

    def swap_parameters(self, swaps: Sequence[Swap]) -> None:
        """Step new parameters in place of old ones (selective sharing's K stacks after
        the warm-up), keeping their Adam moments block by block."""
        by_id = {id(swap.old): swap.new for swap in swaps}
        self.params = {name: [by_id.get(id(p), p) for p in params]
                       for name, params in self.params.items()}
        for optimizer in self.optimizers:
            swap_optimizer_parameters(optimizer, swaps)

    def state_dict(self) -> dict[str, object]:
        return {"optimizers": [o.state_dict() for o in self.optimizers]}

    def load_state_dict(self, state: Mapping[str, object]) -> None:
        saved = state["optimizers"]
        assert isinstance(saved, list)
        if len(saved) != len(self.optimizers):
            raise ValueError(
                f"checkpoint holds {len(saved)} optimiser(s), this run builds "
                f"{len(self.optimizers)}: optim.mode or the agent groups differ from the run "
                "that wrote it"
            )
        for optimizer, optimizer_state in zip(self.optimizers, saved, strict=True):
            optimizer.load_state_dict(optimizer_state)


def _per_agent_parameters(modules: Mapping[str, nn.Module]) -> list[list[nn.Parameter]]:
    """One parameter list per agent, gathered over each group's networks.

    Parameters that belong to no single agent (a stacked log-std, a mixer) form one
    extra list.
    """
    lists: list[list[nn.Parameter]] = []
    for module in modules.values():
        nets = ([module] if hasattr(module, "per_agent_parameters")
                else [m for m in module.children() if hasattr(m, "per_agent_parameters")])
        per_net = [m.per_agent_parameters() for m in nets]  # type: ignore[operator]
        by_agent: list[list[nn.Parameter]] = [
            [p for params in agents for p in params] for agents in zip(*per_net, strict=True)
        ]
        lists.extend(by_agent)
        owned = {id(p) for params in by_agent for p in params}
        rest = [p for p in module.parameters() if id(p) not in owned]
        if rest:
            lists.append(rest)
    return lists

