"""Input wrappers over the batched-env protocol: frame stacking, pixel scaling, agent frames.

They take any :class:`~marl_envs.core.BatchedEnv` (PettingZoo tasks through the vector
envs, or tasks that are batched natively) and return one, so they stack in any order.
Every observation transform is applied to ``obs``, ``next.obs`` and ``final_obs`` alike,
so a truncated step bootstraps from the same kind of input the policy acted on. Wrappers
that need to stop or restart single copies (action repeat, time limits) act on the
PettingZoo env instead, see :mod:`marl_envs.wrappers`.

:func:`wrap` applies them in the order that makes sense: agent frame (on the raw
features), then pixel scaling, then frame stacking (of the transformed frames).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from marl_envs.core import BatchedEnv, BatchedReset, BatchedStep, GroupSpec
from marl_envs.frames import FrameSpec

PIXEL_SCALE = 255.0


class BatchedWrapper:
    """Forwards every call to ``env``; subclasses change what they need.

    Attributes:
        env: the wrapped batched env.
        groups: group specs as this wrapper presents them (observation shapes may change).
    """

    def __init__(self, env: BatchedEnv) -> None:
        self.env = env
        self.num_envs = env.num_envs
        self.groups: dict[str, GroupSpec] = dict(env.groups)
        self.state_shape = env.state_shape
        self.device = env.device

    def reset(self, seed: int | None = None) -> BatchedReset:
        return self.env.reset(seed)

    def step(self, actions: dict[str, torch.Tensor]) -> BatchedStep:
        return self.env.step(actions)

    def close(self) -> None:
        self.env.close()


class ObservationWrapper(BatchedWrapper):
    """Applies :meth:`transform` to the observations of the groups in ``targets``."""

    def __init__(self, env: BatchedEnv, targets: Sequence[str]) -> None:
        super().__init__(env)
        self.targets = tuple(targets)

    def transform(self, group: str, obs: torch.Tensor) -> torch.Tensor:
        """``obs: [E, A_g, *obs_shape]`` -> the wrapped observation (a new tensor)."""
        raise NotImplementedError

    def reset(self, seed: int | None = None) -> BatchedReset:
        first = self.env.reset(seed)
        groups = dict(first.groups)
        for name in self.targets:
            groups[name] = groups[name]._replace(obs=self.transform(name, groups[name].obs))
        return first._replace(groups=groups)

    def step(self, actions: dict[str, torch.Tensor]) -> BatchedStep:
        step = self.env.step(actions)
        groups = dict(step.groups)
        for name in self.targets:
            group = groups[name]
            groups[name] = group._replace(
                final_obs=self.transform(name, group.final_obs),
                next=group.next._replace(obs=self.transform(name, group.next.obs)),
            )
        return step._replace(groups=groups)


class PixelNorm(ObservationWrapper):
    """Scale pixel values (0-255) to [0, 1] in the chosen channels of the chosen groups.

    Args:
        env: the batched env.
        channels: indices on the last observation axis (the channels of a channels-last
            image, as PettingZoo's image tasks give) that hold pixels; other channels pass
            unchanged. None: every channel.
        groups: groups to scale. None: every group whose observation has 3 axes
            (height, width, channels).

    Raises:
        ValueError: an unknown group, no image group to scale, or a channel out of range.
    """

    def __init__(self, env: BatchedEnv, channels: Sequence[int] | None = None,
                 groups: Sequence[str] | None = None) -> None:
        if groups is None:
            groups = [name for name, spec in env.groups.items() if len(spec.obs_shape) == 3]
            if not groups:
                shapes = {name: spec.obs_shape for name, spec in env.groups.items()}
                raise ValueError(
                    "pixel_norm scales image observations (3 axes: height, width, channels), "
                    f"but no group has one: observation shapes {shapes}. Name the groups "
                    "to scale explicitly, or turn pixel_norm off."
                )
        _check_groups(env, groups, "pixel_norm")
        super().__init__(env, groups)
        self.channels = None if channels is None else list(channels)
        for name in self.targets:
            size = env.groups[name].obs_shape[-1]
            bad = [c for c in self.channels or [] if not -size <= c < size]
            if bad:
                raise ValueError(
                    f"pixel_channels {bad} are outside group {name!r}'s last observation axis "
                    f"of size {size} (shape {env.groups[name].obs_shape}); give channel indices "
                    f"in 0..{size - 1}."
                )

    def transform(self, group: str, obs: torch.Tensor) -> torch.Tensor:
        if self.channels is None:
            return obs / PIXEL_SCALE
        out = obs.clone()
        out[..., self.channels] = obs[..., self.channels] / PIXEL_SCALE
        return out


class AgentCentric(ObservationWrapper):
    """Express positions relative to each agent, optionally rotated into its heading.

    Args:
        env: the batched env.
        spec: where positions, vectors and the heading sit in each agent's flat
            observation (:class:`~marl_envs.frames.FrameSpec`).
        groups: groups to transform. None: every group.

    Raises:
        ValueError: an unknown group, a group whose observation is not flat, or a spec
            index outside the observation.
    """

    def __init__(self, env: BatchedEnv, spec: FrameSpec,
                 groups: Sequence[str] | None = None) -> None:
        groups = list(env.groups) if groups is None else list(groups)
        _check_groups(env, groups, "agent_centric")
        for name in groups:
            shape = env.groups[name].obs_shape
            if len(shape) != 1:
                raise ValueError(
                    f"agent_centric needs flat observations, but group {name!r} observes shape "
                    f"{shape}; leave this group out with the groups argument."
                )
            spec.check(shape[0], f"group {name!r}'s observation")
        super().__init__(env, groups)
        self.spec = spec

    def transform(self, group: str, obs: torch.Tensor) -> torch.Tensor:
        return self.spec.apply(obs)


class FrameStack(BatchedWrapper):
    """Observe the last ``num_frames`` observations of each agent, oldest first.

    Frames are concatenated along the last observation axis (the features of a vector,
    the channels of a channels-last image): ``[*obs_shape[:-1], k * obs_shape[-1]]``.
    When an agent starts an episode (at reset, after an auto-reset of its copy, or when
    it enters a running episode) every frame of its stack is its first observation.
    ``final_obs`` stacks the frames of the episode that ended, so a truncated step
    bootstraps from the stack the agent would have seen next; agents that are not alive
    observe zeros. The global state is passed through unstacked.

    Args:
        env: the batched env.
        num_frames: frames per observation ``k`` (1 passes observations through).
    """

    def __init__(self, env: BatchedEnv, num_frames: int) -> None:
        if isinstance(num_frames, bool) or not isinstance(num_frames, int) or num_frames < 1:
            raise ValueError(f"frame_stack must be a positive int (1 = no stacking), got "
                             f"{num_frames!r}.")
        super().__init__(env)
        self.num_frames = num_frames
        self.groups = {name: _stacked_spec(spec, num_frames) for name, spec in env.groups.items()}
        self._frames: dict[str, torch.Tensor] = {}  # [k, E, A_g, *obs_shape]
        self._alive: dict[str, torch.Tensor] = {}  # [E, A_g], agents that act on the stack

    def reset(self, seed: int | None = None) -> BatchedReset:
        first = self.env.reset(seed)
        groups = dict(first.groups)
        for name, group in first.groups.items():
            self._frames[name] = self._repeat(group.obs)
            self._alive[name] = group.alive
            groups[name] = group._replace(obs=_concat(self._frames[name]))
        return first._replace(groups=groups)

    def step(self, actions: dict[str, torch.Tensor]) -> BatchedStep:
        if not self._frames:
            raise RuntimeError("step() called before reset(); call reset(seed) first.")
        step = self.env.step(actions)
        groups = dict(step.groups)
        for name, group in step.groups.items():
            final = torch.cat([self._frames[name][1:], group.final_obs[None]])
            alive = group.next.alive
            started = alive & (~self._alive[name] | step.env_done[:, None])
            frames = torch.where(_per_agent(started, final), self._repeat(group.next.obs), final)
            frames = torch.where(_per_agent(alive, frames), frames, torch.zeros_like(frames))
            self._frames[name], self._alive[name] = frames, alive
            groups[name] = group._replace(
                final_obs=_concat(final), next=group.next._replace(obs=_concat(frames))
            )
        return step._replace(groups=groups)

    def _repeat(self, obs: torch.Tensor) -> torch.Tensor:
        """``obs: [E, A, *s]`` -> ``[k, E, A, *s]``, the same frame ``k`` times (a copy)."""
        return obs[None].expand(self.num_frames, *obs.shape).clone()


def wrap(env: BatchedEnv, frame_stack: int = 1, pixel_norm: bool = False,
         pixel_channels: Sequence[int] | None = None,
         agent_centric: Mapping[str, Any] | None = None) -> BatchedEnv:
    """Apply the input wrappers that are switched on, in the order of the module docstring.

    Args:
        env: the batched env.
        frame_stack: frames per observation (1: off), see :class:`FrameStack`.
        pixel_norm: scale image observations to [0, 1], see :class:`PixelNorm`.
        pixel_channels: channels holding pixels (default: all); needs ``pixel_norm``.
        agent_centric: a :class:`~marl_envs.frames.FrameSpec` as a mapping, plus an
            optional ``groups`` list (default: every group); None: off.
    """
    if pixel_channels is not None and not pixel_norm:
        raise ValueError(f"pixel_channels={list(pixel_channels)} is set but pixel_norm is off; "
                         "set pixel_norm=true as well, or drop pixel_channels.")
    if agent_centric is not None:
        values = dict(agent_centric)
        groups = values.pop("groups", None)
        env = AgentCentric(env, FrameSpec.from_mapping(values), groups)
    if pixel_norm:
        env = PixelNorm(env, pixel_channels)
    if frame_stack != 1:
        env = FrameStack(env, frame_stack)
    return env


def _check_groups(env: BatchedEnv, groups: Sequence[str], option: str) -> None:
    unknown = [name for name in groups if name not in env.groups]
    if unknown or isinstance(groups, str):
        raise ValueError(f"{option}: groups {unknown or groups!r} are not groups of this env; "
                         f"its groups are {list(env.groups)}.")


def _stacked_spec(spec: GroupSpec, num_frames: int) -> GroupSpec:
    *leading, last = spec.obs_shape
    return dataclasses.replace(
        spec, obs_shape=(*leading, num_frames * last),
        obs_mask=torch.cat([spec.obs_mask] * num_frames, dim=-1),
    )


def _concat(frames: torch.Tensor) -> torch.Tensor:
    """``[k, E, A, *s]`` -> ``[E, A, *s[:-1], k * s[-1]]``, oldest frame first."""
    return torch.cat(frames.unbind(0), dim=-1)


def _per_agent(mask: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
    """``mask: [E, A]`` as ``[E, A, 1, ...]``, to broadcast against ``frames: [k, E, A, *s]``."""
    return mask.reshape(*mask.shape, *([1] * (frames.dim() - 3)))
