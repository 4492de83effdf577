"""Transitions for the identity encoder, from a batched env and a uniform random policy.

A random policy is the paper's choice for the warm-up data of the encoder: it visits
every action of every agent, so agents that differ in their rewards or dynamics show it.
"""

from __future__ import annotations

import gymnasium
import torch
from marl_envs.core import BatchedEnv

from marl.groups import discrete_start
from marl.selective.identity import Transitions


def random_actions(
    env: BatchedEnv, generator: torch.Generator
) -> dict[str, torch.Tensor]:
    """Uniform random actions for every group: ``[E, A_g]`` int64 or ``[E, A_g, D]`` float."""
    actions: dict[str, torch.Tensor] = {}
    for name, spec in env.groups.items():
        size = (env.num_envs, spec.num_agents)
        space = spec.action_space
        if isinstance(space, gymnasium.spaces.Discrete):
            values = torch.randint(int(space.n), size, generator=generator)
            actions[name] = values + int(space.start)
        elif isinstance(space, gymnasium.spaces.Box):
            low = torch.as_tensor(space.low, dtype=torch.float32)
            high = torch.as_tensor(space.high, dtype=torch.float32)
            unit = torch.rand((*size, *space.shape), generator=generator)
            actions[name] = low + unit * (high - low)
        else:
            raise TypeError(
                f"group {name!r}: random actions need a Discrete or Box action space; "
                f"got {space}."
            )
    return actions


def collect_random_transitions(
    env: BatchedEnv, group: str, steps: int, seed: int = 0
) -> Transitions:
    """Step ``env`` ``steps`` times with random actions; return ``group``'s transitions.

    Returns:
        :class:`Transitions` with ``N = steps * E``; ``action`` holds the Discrete index
        (the env's value minus ``start``) or the Box action; ``next_obs`` is the
        observation before auto-reset (``final_obs``).
    """
    if group not in env.groups:
        raise ValueError(f"group must be one of {sorted(env.groups)}; got {group!r}.")
    generator = torch.Generator().manual_seed(seed)
    space = env.groups[group].action_space
    start = discrete_start(space)
    current = env.reset(seed=seed).groups[group]
    columns: dict[str, list[torch.Tensor]] = {key: [] for key in Transitions._fields}
    for _ in range(steps):
        actions = random_actions(env, generator)
        step = env.step(actions).groups[group]
        action = actions[group] - start if start else actions[group]
        for key, value in zip(
            Transitions._fields,
            (current.obs, action, step.final_obs, step.reward, current.alive),
            strict=True,
        ):
            columns[key].append(value.cpu())
        current = step.next
    return Transitions(*(torch.cat(columns[key]) for key in Transitions._fields))
