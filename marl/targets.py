"""Target networks: hard and soft (Polyak) updates across all groups, TD3 target smoothing.

Targets are plain copies of the online modules (``copy.deepcopy``), kept out of the
optimiser. :func:`update_targets` moves every target of every group in one fused
``torch._foreach_*`` call over the flat lists of parameter tensors: with the ``batched``
backend a group's agents live in stacked ``[A, ...]`` tensors, so updating ``A`` agents
costs the same few kernel launches as updating one.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn


def make_target(module: nn.Module) -> nn.Module:
    """A frozen copy of ``module`` (no gradients, never in the optimiser)."""
    # Under no_grad: a TorchScript module (the fork backend) copies its parameters with
    # clone(), which would otherwise record them as non-leaf outputs of the originals.
    with torch.no_grad():
        target = copy.deepcopy(module)
    for parameter in target.parameters():
        parameter.requires_grad_(False)
    return target


def _pairs_to_lists(pairs: Sequence[tuple[nn.Module, nn.Module]]
                    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    online: list[torch.Tensor] = []
    target: list[torch.Tensor] = []
    for source, destination in pairs:
        source_params = list(source.parameters())
        target_params = list(destination.parameters())
        if len(source_params) != len(target_params):
            raise ValueError(
                f"target network has {len(target_params)} parameter tensors, its online "
                f"network {len(source_params)}; build targets with make_target(online)"
            )
        for a, b in zip(source_params, target_params, strict=True):
            if a.shape != b.shape:
                raise ValueError(f"target parameter of shape {list(b.shape)} does not match "
                                 f"the online parameter of shape {list(a.shape)}")
        online.extend(p.detach() for p in source_params)
        target.extend(target_params)
    return online, target


@torch.no_grad()
def update_targets(pairs: Sequence[tuple[nn.Module, nn.Module]], tau: float) -> None:
    """Move every target towards its online network: ``target += tau * (online - target)``.

    ``tau = 1`` is a hard copy (one ``_foreach_copy_``), ``0 < tau < 1`` a soft Polyak
    update (one ``_foreach_lerp_``), ``tau = 0`` leaves the targets as they are.

    Args:
        pairs: ``(online, target)`` modules of every group (Q networks, mixers, actors,
            critics), all updated by the same call.
        tau: interpolation factor in ``[0, 1]``.
    """
    if not 0.0 <= tau <= 1.0:
        raise ValueError(f"target update tau must be in [0, 1]; got {tau}")
    online, target = _pairs_to_lists(pairs)
    if tau == 0.0 or not target:
        return
    if tau == 1.0:
        torch._foreach_copy_(target, online)
    else:
        torch._foreach_lerp_(target, online, tau)


def smoothed_target_action(action: torch.Tensor, noise_std: float, noise_clip: float,
                           generator: torch.Generator | None = None) -> torch.Tensor:
    """TD3's target policy smoothing (Fujimoto et al. 2018, arXiv:1802.09477, eq. 14).

    Adds ``clip(N(0, noise_std), -noise_clip, noise_clip)`` to the target actor's action
    and clips the result to the action range ``[-1, 1]`` (actions are kept in that scale).

    Args:
        action: ``[*B, A, D]`` target actor actions in ``[-1, 1]``.

    Returns:
        ``[*B, A, D]`` smoothed actions.
    """
    noise = torch.randn(action.shape, generator=generator, device=action.device,
                        dtype=action.dtype) * noise_std
    return (action + noise.clamp(-noise_clip, noise_clip)).clamp(-1.0, 1.0)
