"""From a PettingZoo ParallelEnv's agents and spaces to agent groups and slots.

:func:`describe_env` inspects one instance of a task and returns an :class:`EnvLayout`:
the :class:`~marl_envs.core.GroupSpec` of every group and, for every possible agent,
the group and slot it writes to. Everything that can be rejected is rejected here, once,
with a message that names the agent and its space, so stepping needs no checks.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import gymnasium
import numpy as np
import torch
from gymnasium.spaces import Box, Dict, Discrete
from marl_envs.core import GroupSpec
from marl_envs.errors import GroupingError, UnsupportedSpaceError
from pettingzoo import ParallelEnv

EnvFactory = Callable[[], ParallelEnv]
"""A picklable zero-argument callable returning a fresh ParallelEnv."""

_INDEXED_NAME = re.compile(r"^(?P<prefix>.+)_\d+$")

_SUPPORTED_OBS = (
    "a gymnasium Box (any shape) or a Dict with keys 'observation' (a Box) and "
    "'action_mask' (PettingZoo classic style)"
)
_SUPPORTED_ACTIONS = "gymnasium Discrete or Box"


@dataclass(frozen=True)
class AgentSlot:
    """Where one agent's data lives in its group's ``[E, A_g, ...]`` tensors.

    Attributes:
        group: name of the agent's group.
        slot: index of the agent on the group's agent axis.
        obs_size: length of the agent's (1-D) observation before padding, or None for
            observations with more than one axis (never padded).
        dict_obs: the observation is a Dict with ``observation`` and ``action_mask``.
        discrete: the action space is ``Discrete`` (actions passed as Python ints).
        num_actions: for a Discrete agent in a group whose action space was padded to a
            larger ``Discrete``, the agent's own number of actions (the actions above it
            are masked out); otherwise None.
    """

    group: str
    slot: int
    obs_size: int | None
    dict_obs: bool
    discrete: bool
    num_actions: int | None = None


@dataclass(frozen=True)
class EnvLayout:
    """Groups and slots of a task, shared by every copy and every worker.

    Attributes:
        groups: group specs in group order.
        agents: slot of every possible agent, in ``possible_agents`` order.
        state_shape: shape of ``env.state()``, or None when the task has none (or state
            was not requested).
    """

    groups: dict[str, GroupSpec]
    agents: dict[str, AgentSlot]
    state_shape: tuple[int, ...] | None


def default_groups(agents: Sequence[str]) -> dict[str, list[str]]:
    """Group agents by name prefix: ``adversary_0`` -> ``adversary``, ``agent_2`` -> ``agent``.

    A name without a ``_<digits>`` suffix is a group of its own. Groups are ordered by
    their first agent in ``agents``; agents keep their order inside a group.
    """
    groups: dict[str, list[str]] = {}
    for agent in agents:
        match = _INDEXED_NAME.match(agent)
        groups.setdefault(match["prefix"] if match else agent, []).append(agent)
    return groups


def check_groups(
    groups: Mapping[str, Sequence[str]], possible_agents: Sequence[str]
) -> dict[str, tuple[str, ...]]:
    """Check that ``groups`` puts every possible agent in exactly one non-empty group.

    Raises:
        GroupingError: naming the unknown, repeated or missing agents.
    """
    fix = f"Pass groups as {{group_name: [agent, ...]}} covering {list(possible_agents)}."
    seen: dict[str, str] = {}
    for name, members in groups.items():
        if isinstance(members, str) or not members:
            raise GroupingError(
                f"group {name!r} must be a non-empty list of agent names, got {members!r}. {fix}"
            )
        for agent in members:
            if agent not in possible_agents:
                raise GroupingError(
                    f"group {name!r} lists {agent!r}, which is not an agent of this env "
                    f"(possible_agents: {list(possible_agents)}). {fix}"
                )
            if agent in seen:
                raise GroupingError(
                    f"agent {agent!r} is in groups {seen[agent]!r} and {name!r}; every agent "
                    f"must be in exactly one group. {fix}"
                )
            seen[agent] = name
    missing = [agent for agent in possible_agents if agent not in seen]
    if missing:
        raise GroupingError(f"agents {missing} are in no group. {fix}")
    return {name: tuple(members) for name, members in groups.items()}


def describe_env(
    env: ParallelEnv,
    groups: Mapping[str, Sequence[str]] | None = None,
    include_state: bool = True,
) -> EnvLayout:
    """Validate the spaces of ``env`` and lay its agents out in groups.

    ``env`` is reset once (seed 0) to find action masks passed through ``infos`` and the
    shape of ``env.state()``.

    Args:
        env: one instance of the task.
        groups: explicit grouping; default :func:`default_groups` of ``possible_agents``.
        include_state: look for ``env.state()``; False gives ``state_shape=None``.

    Raises:
        UnsupportedSpaceError: an observation or action space that cannot be batched.
        GroupingError: a bad grouping, or agents of one group with different action
            spaces or incompatible observation shapes.
    """
    possible_agents = list(env.possible_agents)
    grouping = check_groups(
        groups if groups is not None else default_groups(possible_agents), possible_agents
    )
    _, infos = env.reset(seed=0)
    masked_by_info = {agent for agent, info in infos.items() if "action_mask" in info}
    specs: dict[str, GroupSpec] = {}
    slots: dict[str, AgentSlot] = {}
    for name, members in grouping.items():
        spec, group_slots = _describe_group(env, name, members, masked_by_info)
        specs[name] = spec
        slots.update(group_slots)
    ordered_slots = {agent: slots[agent] for agent in possible_agents}
    state_shape = _state_shape(env) if include_state else None
    return EnvLayout(groups=specs, agents=ordered_slots, state_shape=state_shape)


def _describe_group(
    env: ParallelEnv, name: str, members: tuple[str, ...], masked_by_info: set[str]
) -> tuple[GroupSpec, dict[str, AgentSlot]]:
    obs_boxes: list[Box] = []
    dict_obs: list[bool] = []
    for agent in members:
        box, is_dict = observation_box(agent, env.observation_space(agent))
        obs_boxes.append(box)
        dict_obs.append(is_dict)
    action_space = _group_action_space(env, name, members)
    obs_shape, obs_mask = _padded_obs(name, members, obs_boxes)
    own_actions = _padded_actions(env, members, action_space)
    has_mask = (
        any(dict_obs)
        or any(agent in masked_by_info for agent in members)
        or any(n is not None for n in own_actions.values())
    )
    if has_mask and not isinstance(action_space, Discrete):
        raise UnsupportedSpaceError(
            f"group {name!r} has action masks but action space {action_space}; masks are "
            "supported for Discrete actions only. Remove the mask from the observations, "
            "or wrap the env to give these agents a Discrete action space."
        )
    discrete = isinstance(action_space, Discrete)
    slots = {
        agent: AgentSlot(
            group=name,
            slot=slot,
            obs_size=box.shape[0] if len(box.shape) == 1 else None,
            dict_obs=is_dict,
            discrete=discrete,
            num_actions=own_actions[agent],
        )
        for slot, (agent, box, is_dict) in enumerate(zip(members, obs_boxes, dict_obs, strict=True))
    }
    spec = GroupSpec(
        name=name,
        agents=members,
        obs_shape=obs_shape,
        obs_mask=obs_mask,
        action_space=action_space,
        has_action_mask=has_mask,
    )
    return spec, slots


def observation_box(agent: str, space: gymnasium.Space[Any]) -> tuple[Box, bool]:
    """The Box holding ``agent``'s observation, and whether it sits in a masked Dict.

    Raises:
        UnsupportedSpaceError: for any other space.
    """
    if isinstance(space, Box):
        return space, False
    if (
        isinstance(space, Dict)
        and set(space.spaces) >= {"observation", "action_mask"}
        and isinstance(space["observation"], Box)
    ):
        return space["observation"], True
    raise UnsupportedSpaceError(
        f"agent {agent!r} has observation space {space}; supported: {_SUPPORTED_OBS}. "
        "Wrap the env to flatten or one-hot encode this observation into a Box."
    )


def _group_action_space(env: ParallelEnv, name: str, members: tuple[str, ...]) -> gymnasium.Space:
    spaces = {agent: env.action_space(agent) for agent in members}
    for agent, space in spaces.items():
        if not isinstance(space, Discrete | Box):
            raise UnsupportedSpaceError(
                f"agent {agent!r} has action space {space}; supported: {_SUPPORTED_ACTIONS}. "
                "Wrap the env to flatten it (e.g. MultiDiscrete -> one Discrete over all "
                "combinations, Tuple/Dict -> one Box)."
            )
    first_agent = members[0]
    if all(isinstance(space, Discrete) and space.start == 0 for space in spaces.values()):
        # Agents with fewer actions share the largest Discrete; the actions they do not
        # have are masked out for them (envs/runner.py), so they are never sampled.
        return Discrete(max(int(space.n) for space in spaces.values()))
    for agent, space in spaces.items():
        if space != spaces[first_agent]:
            raise GroupingError(
                f"group {name!r} mixes action spaces: {first_agent!r} has "
                f"{spaces[first_agent]} but {agent!r} has {space}. Agents of one group must "
                "share the action space; group them differently with groups={...}."
            )
    return spaces[first_agent]


def _padded_actions(
    env: ParallelEnv, members: tuple[str, ...], action_space: gymnasium.Space
) -> dict[str, int | None]:
    """Each member's own number of actions where it is below the group's padded Discrete."""
    own: dict[str, int | None] = {agent: None for agent in members}
    if isinstance(action_space, Discrete):
        for agent in members:
            n = int(env.action_space(agent).n)
            if n < int(action_space.n):
                own[agent] = n
    return own


def _padded_obs(
    name: str, members: tuple[str, ...], boxes: list[Box]
) -> tuple[tuple[int, ...], torch.Tensor]:
    """Padded observation shape of a group and its ``[A_g, *obs_shape]`` bool mask."""
    shapes = [tuple(box.shape) for box in boxes]
    if all(len(shape) == 1 for shape in shapes):
        width = max(shape[0] for shape in shapes)
        mask = np.zeros((len(members), width), dtype=bool)
        for slot, shape in enumerate(shapes):
            mask[slot, : shape[0]] = True
        return (width,), torch.from_numpy(mask)
    if len(set(shapes)) > 1:
        described = ", ".join(
            f"{agent}: {shape}" for agent, shape in zip(members, shapes, strict=True)
        )
        raise GroupingError(
            f"group {name!r} mixes observation shapes ({described}). Only 1-D observations "
            "are padded; give these agents separate groups with groups={...}, or wrap the "
            "env to flatten the observations."
        )
    return shapes[0], torch.ones((len(members), *shapes[0]), dtype=torch.bool)


def _state_shape(env: ParallelEnv) -> tuple[int, ...] | None:
    try:
        state = env.state()
    except NotImplementedError:
        return None
    return tuple(np.shape(state))
