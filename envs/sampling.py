"""Random actions for batched envs (benchmarks, smoke tests, random-policy baselines)."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from gymnasium.spaces import Box, Discrete
from marl_envs.core import GroupObs, GroupSpec


def random_actions(
    groups: Mapping[str, GroupSpec],
    observations: Mapping[str, GroupObs],
    generator: torch.Generator | None = None,
) -> dict[str, torch.Tensor]:
    """Uniform random actions for every group, respecting action masks.

    Args:
        groups: the batched env's group specs.
        observations: per group, the current :class:`GroupObs` (``obs: [E, A_g, ...]``,
            ``action_mask: [E, A_g, n]`` or None); only shapes and masks are used.
        generator: torch RNG, for reproducible actions.

    Returns:
        Per group ``[E, A_g]`` int64 (Discrete) or ``[E, A_g, *shape]`` float32 (Box,
        uniform within finite bounds, standard normal where a bound is infinite).
    """
    actions: dict[str, torch.Tensor] = {}
    for name, spec in groups.items():
        batch = tuple(observations[name].alive.shape)
        space = spec.action_space
        if isinstance(space, Discrete):
            actions[name] = _discrete(
                int(space.n), observations[name].action_mask, batch, generator
            )
            actions[name] += int(space.start)
        elif isinstance(space, Box):
            low = torch.as_tensor(space.low, dtype=torch.float32)
            high = torch.as_tensor(space.high, dtype=torch.float32)
            uniform = torch.rand((*batch, *space.shape), generator=generator)
            normal = torch.randn((*batch, *space.shape), generator=generator)
            bounded = torch.isfinite(low) & torch.isfinite(high)
            actions[name] = torch.where(bounded, low + uniform * (high - low), normal)
        else:
            raise TypeError(f"group {name!r} has unsupported action space {space}.")
    return actions


def _discrete(
    num_actions: int,
    mask: torch.Tensor | None,
    batch: tuple[int, ...],
    generator: torch.Generator | None,
) -> torch.Tensor:
    """``batch``-shaped int64 draws from ``range(num_actions)``, allowed ones only."""
    if mask is None:
        return torch.randint(num_actions, batch, generator=generator)
    weights = mask.float().reshape(-1, num_actions)
    # A row with nothing allowed gets a uniform draw rather than an error.
    weights = torch.where(weights.sum(-1, keepdim=True) > 0, weights, 1.0)
    return torch.multinomial(weights, 1, generator=generator).reshape(batch)
