"""A deliberately plain reference: E PettingZoo envs stepped by hand, as per-agent dicts.

It follows the batched-env contract for envs that remove finished agents from
``env.agents`` (as PettingZoo asks), and the tests compare the vector envs against it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from gymnasium.spaces import Box, Discrete
from marl_envs import BatchedReset, BatchedStep, GroupSpec
from pettingzoo import ParallelEnv


@dataclass
class CopyRecord:
    """What one copy did in one step, keyed by agent (missing agent = no value)."""

    reward: dict[str, float] = field(default_factory=dict)
    terminated: dict[str, bool] = field(default_factory=dict)
    truncated: dict[str, bool] = field(default_factory=dict)
    final_obs: dict[str, np.ndarray] = field(default_factory=dict)
    obs: dict[str, np.ndarray] = field(default_factory=dict)
    done: bool = False
    final_state: np.ndarray | None = None
    state: np.ndarray | None = None
    infos: dict[str, dict[str, Any]] = field(default_factory=dict)


class HandStepped:
    def __init__(self, env_fn: Callable[[], ParallelEnv], num_envs: int, seed: int) -> None:
        self.envs = [env_fn() for _ in range(num_envs)]
        self.first = [CopyRecord() for _ in range(num_envs)]
        for index, env in enumerate(self.envs):
            observations, infos = env.reset(seed=seed + index)
            self.first[index].obs = {agent: observations[agent] for agent in env.agents}
            self.first[index].infos = {agent: infos[agent] for agent in env.agents}
            self.first[index].state = _state(env)

    def step(self, actions: list[dict[str, Any]]) -> list[CopyRecord]:
        records = []
        for index, env in enumerate(self.envs):
            acting = list(env.agents)
            observations, rewards, terminations, truncations, infos = env.step(
                {agent: actions[index][agent] for agent in acting}
            )
            record = CopyRecord(
                reward={agent: rewards[agent] for agent in acting},
                terminated={agent: terminations[agent] for agent in acting},
                truncated={agent: truncations[agent] for agent in acting},
                final_obs=dict(observations),
            )
            record.final_state = _state(env)
            if not env.agents:
                record.done = True
                observations, infos = env.reset()
            record.obs = {agent: observations[agent] for agent in env.agents}
            record.infos = {agent: infos[agent] for agent in env.agents}
            record.state = _state(env)
            records.append(record)
        return records


def _padded(spec: GroupSpec, values: dict[str, Any]) -> torch.Tensor:
    out = torch.zeros((spec.num_agents, *spec.obs_shape))
    for slot, agent in enumerate(spec.agents):
        if agent in values:
            value = values[agent]
            if isinstance(value, dict):
                value = value["observation"]
            value = torch.as_tensor(np.asarray(value, dtype=np.float32))
            out[slot][tuple(slice(0, size) for size in value.shape)] = value
    return out


def _state(env: ParallelEnv) -> np.ndarray | None:
    try:
        return env.state()
    except NotImplementedError:
        return None


def _assert_states(batched: torch.Tensor | None, states: list[np.ndarray | None]) -> None:
    if states[0] is None:
        assert batched is None
        return
    assert batched is not None
    expected = np.stack([np.asarray(state, dtype=np.float32) for state in states])
    torch.testing.assert_close(batched, torch.from_numpy(expected))


def assert_reset_matches(
    reset: BatchedReset, groups: dict[str, GroupSpec], first: list[CopyRecord]
) -> None:
    for name, spec in groups.items():
        for row, record in enumerate(first):
            torch.testing.assert_close(reset.groups[name].obs[row], _padded(spec, record.obs))
            alive = torch.tensor([agent in record.obs for agent in spec.agents])
            assert torch.equal(reset.groups[name].alive[row], alive)
    _assert_states(reset.state, [record.state for record in first])


def assert_step_matches(
    step: BatchedStep, groups: dict[str, GroupSpec], records: list[CopyRecord]
) -> None:
    assert step.env_done.tolist() == [record.done for record in records]
    _assert_states(step.state, [record.state for record in records])
    _assert_states(step.final_state, [record.final_state for record in records])
    for name, spec in groups.items():
        group = step.groups[name]
        for row, record in enumerate(records):
            expected_reward = [float(record.reward.get(agent, 0.0)) for agent in spec.agents]
            torch.testing.assert_close(group.reward[row], torch.tensor(expected_reward))
            for flag in ("terminated", "truncated"):
                values = getattr(record, flag)
                expected = torch.tensor([bool(values.get(agent, False)) for agent in spec.agents])
                assert torch.equal(getattr(group, flag)[row], expected), (flag, row)
            torch.testing.assert_close(group.final_obs[row], _padded(spec, record.final_obs))
            torch.testing.assert_close(group.next.obs[row], _padded(spec, record.obs))
            alive = torch.tensor([agent in record.obs for agent in spec.agents])
            assert torch.equal(group.next.alive[row], alive), row


def draw_actions(
    groups: dict[str, GroupSpec], num_envs: int, rng: np.random.Generator
) -> tuple[dict[str, torch.Tensor], list[dict[str, Any]]]:
    """The same random actions as batched tensors and as per-copy PettingZoo dicts."""
    batched: dict[str, torch.Tensor] = {}
    per_copy: list[dict[str, Any]] = [{} for _ in range(num_envs)]
    for name, spec in groups.items():
        space = spec.action_space
        shape = (num_envs, spec.num_agents)
        values: np.ndarray
        if isinstance(space, Discrete):
            values = rng.integers(space.start, space.start + space.n, size=shape)
        else:
            assert isinstance(space, Box)
            uniform = rng.uniform(space.low, space.high, size=(*shape, *space.shape))
            values = uniform.astype(np.float32)
        batched[name] = torch.from_numpy(values)
        for row in range(num_envs):
            for slot, agent in enumerate(spec.agents):
                value = values[row, slot]
                per_copy[row][agent] = int(value) if isinstance(space, Discrete) else value.copy()
    return batched, per_copy
