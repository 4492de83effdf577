"""Constructors of the torch MPE tasks, with ``mpe2``'s keyword arguments and defaults.

Registered as ``torch/<name>`` in :data:`marl_envs.families.FAMILIES`: ``make`` builds
the batched env directly, ``make_parallel_env`` returns the ParallelEnv view of one copy.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from marl_envs.torch_mpe.env import TorchMPEEnv
from marl_envs.torch_mpe.parallel import TorchMPEParallelEnv
from marl_envs.torch_mpe.scenarios import (
    HiddenColours,
    SimpleReference,
    SimpleSpeakerListener,
    SimpleSpread,
)


def _check_local_ratio(local_ratio: float) -> None:
    if not 0.0 <= local_ratio <= 1.0:
        raise ValueError(f"local_ratio is a proportion in [0, 1], got {local_ratio!r}.")


def simple_spread_v3(num_envs: int = 1, N: int = 3, local_ratio: float = 0.5,  # noqa: N803
                     max_cycles: int = 25, continuous_actions: bool = False,
                     device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
                     include_state: bool = True) -> TorchMPEEnv:
    """``mpe2.simple_spread_v3`` with ``N`` agents and ``N`` landmarks, ``num_envs`` copies."""
    if not isinstance(N, int) or N < 1:
        raise ValueError(f"N (agents and landmarks) must be a positive int, got {N!r}.")
    _check_local_ratio(local_ratio)
    return TorchMPEEnv(SimpleSpread(num_agents=N, local_ratio=local_ratio), num_envs,
                       max_cycles, continuous_actions, device, dtype, include_state)


def simple_speaker_listener_v4(num_envs: int = 1, max_cycles: int = 25,
                               continuous_actions: bool = False,
                               device: torch.device | str = "cpu",
                               dtype: torch.dtype = torch.float32,
                               include_state: bool = True) -> TorchMPEEnv:
    """``mpe2.simple_speaker_listener_v4``, ``num_envs`` copies."""
    return TorchMPEEnv(SimpleSpeakerListener(), num_envs, max_cycles, continuous_actions,
                       device, dtype, include_state)


def simple_reference_v3(num_envs: int = 1, local_ratio: float = 0.5, max_cycles: int = 25,
                        continuous_actions: bool = False, device: torch.device | str = "cpu",
                        dtype: torch.dtype = torch.float32,
                        include_state: bool = True) -> TorchMPEEnv:
    """``mpe2.simple_reference_v3``, ``num_envs`` copies."""
    _check_local_ratio(local_ratio)
    return TorchMPEEnv(SimpleReference(local_ratio=local_ratio), num_envs, max_cycles,
                       continuous_actions, device, dtype, include_state)


def hidden_colours_v0(num_envs: int = 1, N: int = 8, K: int = 2,  # noqa: N803
                      type_seed: int = 0, max_cycles: int = 25,
                      continuous_actions: bool = False, device: torch.device | str = "cpu",
                      dtype: torch.dtype = torch.float32,
                      include_state: bool = True) -> TorchMPEEnv:
    """``N`` agents of ``K`` hidden types, each rewarded for reaching the landmark of its
    type's colour (:class:`~marl_envs.torch_mpe.scenarios.HiddenColours`); the types are a
    balanced assignment shuffled by ``type_seed``."""
    if not (isinstance(N, int) and isinstance(K, int) and 1 <= K <= N):
        raise ValueError(f"need integers 1 <= K (types) <= N (agents), got N={N!r}, K={K!r}.")
    return TorchMPEEnv(HiddenColours(num_agents=N, num_types=K, type_seed=type_seed),
                       num_envs, max_cycles, continuous_actions, device, dtype, include_state)


TASKS: dict[str, Callable[..., TorchMPEEnv]] = {
    "hidden_colours_v0": hidden_colours_v0,
    "simple_spread_v3": simple_spread_v3,
    "simple_speaker_listener_v4": simple_speaker_listener_v4,
    "simple_reference_v3": simple_reference_v3,
}


def parallel_view(build: Callable[..., TorchMPEEnv], **kwargs: Any) -> TorchMPEParallelEnv:
    """The ParallelEnv view of one copy of the task ``build`` makes from ``kwargs``."""
    if "num_envs" in kwargs:
        raise ValueError("a ParallelEnv view holds one copy; drop num_envs (use make() for "
                         "many copies).")
    return TorchMPEParallelEnv(build(num_envs=1, **kwargs))
