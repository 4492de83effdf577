"""Preallocated numpy buffers that env copies write into, and the tensors copied out.

One :class:`StepArrays` holds everything a step produces for ``E`` copies. The in-process
vector env allocates it with numpy; the subprocess vector env carves it out of one shared
memory block (:func:`allocate`) that every worker maps at the same offsets, so a copy
writes its row in place and nothing is pickled per step.

Torch tensors handed to callers are always fresh copies (:meth:`StepArrays.to_step`): the
buffers are overwritten by the next step, the tensors never are.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from gymnasium.spaces import Discrete
from marl_envs.core import BatchedReset, BatchedStep, GroupObs, GroupStep
from marl_envs.layout import EnvLayout

_ALIGN = 64

ArraySpec = tuple[str, tuple[int, ...], Any]
"""``(key, shape, numpy dtype)`` of one buffer; keys look like ``"agent/obs"``."""


@dataclass(frozen=True)
class GroupArrays:
    """Buffers of one group; every array starts with the ``[E, A_g]`` axes.

    Attributes:
        obs: ``[E, A_g, *obs_shape]`` float32, observation to act on (after auto-reset).
        final_obs: ``[E, A_g, *obs_shape]`` float32, observation returned by the step.
        reward: ``[E, A_g]`` float32.
        terminated: ``[E, A_g]`` bool.
        truncated: ``[E, A_g]`` bool.
        alive: ``[E, A_g]`` bool, agents that act on ``obs``.
        action_mask: ``[E, A_g, n]`` bool, or None when the group has no masks.
        action: ``[E, A_g]`` int64 or ``[E, A_g, *shape]`` float32, actions in.
    """

    obs: np.ndarray
    final_obs: np.ndarray
    reward: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    alive: np.ndarray
    action_mask: np.ndarray | None
    action: np.ndarray


@dataclass(frozen=True)
class StepArrays:
    """All buffers of a vector env.

    Attributes:
        groups: per group, in layout order.
        env_done: ``[E]`` bool, the copy was reset after this step.
        state: ``[E, *S]`` float32 or None.
        final_state: ``[E, *S]`` float32 or None.
    """

    groups: dict[str, GroupArrays]
    env_done: np.ndarray
    state: np.ndarray | None
    final_state: np.ndarray | None

    def clear(self, rows: slice) -> None:
        """Reset ``rows`` of every output buffer to "no agent": zeros, False, masks True."""
        self.env_done[rows] = False
        for group in self.groups.values():
            group.obs[rows] = 0.0
            group.final_obs[rows] = 0.0
            group.reward[rows] = 0.0
            group.terminated[rows] = False
            group.truncated[rows] = False
            group.alive[rows] = False
            if group.action_mask is not None:
                group.action_mask[rows] = True

    def to_reset(self) -> BatchedReset:
        """Copy the observations out as a :class:`BatchedReset` of fresh tensors."""
        return BatchedReset(
            groups={name: _group_obs(group) for name, group in self.groups.items()},
            state=_tensor(self.state),
        )

    def to_step(self) -> BatchedStep:
        """Copy the transition out as a :class:`BatchedStep` of fresh tensors."""
        groups = {
            name: GroupStep(
                reward=_copy(group.reward),
                terminated=_copy(group.terminated),
                truncated=_copy(group.truncated),
                final_obs=_copy(group.final_obs),
                next=_group_obs(group),
            )
            for name, group in self.groups.items()
        }
        return BatchedStep(
            groups=groups,
            env_done=_copy(self.env_done),
            state=_tensor(self.state),
            final_state=_tensor(self.final_state),
        )


def array_specs(layout: EnvLayout, num_envs: int) -> list[ArraySpec]:
    """The buffers a layout needs for ``num_envs`` copies, in a fixed order."""
    specs: list[ArraySpec] = [("env_done", (num_envs,), np.bool_)]
    if layout.state_shape is not None:
        specs.append(("state", (num_envs, *layout.state_shape), np.float32))
        specs.append(("final_state", (num_envs, *layout.state_shape), np.float32))
    for name, spec in layout.groups.items():
        rows = (num_envs, spec.num_agents)
        specs += [
            (f"{name}/obs", (*rows, *spec.obs_shape), np.float32),
            (f"{name}/final_obs", (*rows, *spec.obs_shape), np.float32),
            (f"{name}/reward", rows, np.float32),
            (f"{name}/terminated", rows, np.bool_),
            (f"{name}/truncated", rows, np.bool_),
            (f"{name}/alive", rows, np.bool_),
        ]
        space = spec.action_space
        if isinstance(space, Discrete):
            specs.append((f"{name}/action", rows, np.int64))
        else:
            specs.append((f"{name}/action", (*rows, *space.shape), np.float32))
        if spec.has_action_mask:
            assert isinstance(space, Discrete)
            specs.append((f"{name}/action_mask", (*rows, int(space.n)), np.bool_))
    return specs


def block_size(specs: list[ArraySpec]) -> int:
    """Bytes needed to hold every buffer of ``specs`` in one aligned block."""
    return sum(_aligned(_nbytes(shape, dtype)) for _, shape, dtype in specs)


def allocate(layout: EnvLayout, specs: list[ArraySpec], block: Any = None) -> StepArrays:
    """Numpy buffers for ``specs``: views into ``block`` (a writable buffer of at least
    :func:`block_size` bytes, e.g. a ``multiprocessing.RawArray``) or fresh arrays.

    Every process that calls this with the same specs and block sees the same memory.
    """
    base = np.frombuffer(block, dtype=np.uint8) if block is not None else None
    arrays: dict[str, np.ndarray] = {}
    offset = 0
    for key, shape, dtype in specs:
        if base is None:
            arrays[key] = np.zeros(shape, dtype=dtype)
            continue
        arrays[key] = np.ndarray(shape, dtype=dtype, buffer=base, offset=offset)
        offset += _aligned(_nbytes(shape, dtype))
    groups = {
        name: GroupArrays(
            obs=arrays[f"{name}/obs"],
            final_obs=arrays[f"{name}/final_obs"],
            reward=arrays[f"{name}/reward"],
            terminated=arrays[f"{name}/terminated"],
            truncated=arrays[f"{name}/truncated"],
            alive=arrays[f"{name}/alive"],
            action_mask=arrays.get(f"{name}/action_mask"),
            action=arrays[f"{name}/action"],
        )
        for name in layout.groups
    }
    return StepArrays(
        groups=groups,
        env_done=arrays["env_done"],
        state=arrays.get("state"),
        final_state=arrays.get("final_state"),
    )


def _group_obs(group: GroupArrays) -> GroupObs:
    return GroupObs(
        obs=_copy(group.obs), alive=_copy(group.alive), action_mask=_tensor(group.action_mask)
    )


def _copy(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(array.copy())


def _tensor(array: np.ndarray | None) -> torch.Tensor | None:
    return None if array is None else _copy(array)


def _nbytes(shape: tuple[int, ...], dtype: Any) -> int:
    return int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize


def _aligned(size: int) -> int:
    return -(-size // _ALIGN) * _ALIGN
