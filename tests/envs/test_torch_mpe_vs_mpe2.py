"""The torch MPE tasks step exactly as mpe2: same start state, same actions, whole episodes.

Each case builds ``E`` mpe2 envs with different seeds, copies their worlds (positions,
velocities, utterances, goal landmarks) into the ``E`` copies of one float64 torch env,
then applies the same random actions to both for a whole episode and compares every
observation, reward, termination and truncation.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from marl_envs.torch_mpe import TASKS, TorchMPEEnv, WorldState
from mpe2 import simple_reference_v3, simple_speaker_listener_v4, simple_spread_v3

MPE2 = {
    "simple_spread_v3": simple_spread_v3,
    "simple_speaker_listener_v4": simple_speaker_listener_v4,
    "simple_reference_v3": simple_reference_v3,
}
NUM_COPIES = 2
MAX_CYCLES = 25


def _world_of(mpe2_envs: list[Any]) -> WorldState:
    """The torch state holding each mpe2 env's world in one copy."""
    worlds = [env.unwrapped.world for env in mpe2_envs]

    def stack(values: Any) -> torch.Tensor:
        return torch.as_tensor(np.array(values), dtype=torch.float64)

    goals = [[world.landmarks.index(agent._goal_b) if getattr(agent, "_goal_b", None) is not None
              else -1 for agent in world.agents] for world in worlds]
    return WorldState(
        agent_pos=stack([[a.state.p_pos for a in w.agents] for w in worlds]),
        agent_vel=stack([[a.state.p_vel for a in w.agents] for w in worlds]),
        comm=stack([[a.state.c for a in w.agents] for w in worlds]),
        landmark_pos=stack([[lm.state.p_pos for lm in w.landmarks] for w in worlds]),
        goal=torch.tensor(goals, dtype=torch.int64),
    )


def _per_agent(env: TorchMPEEnv, grouped: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """``{agent: [E, ...]}`` from per-group ``[E, A_g, ...]`` tensors."""
    return {agent: grouped[name][:, slot].numpy() for name, spec in env.groups.items()
            for slot, agent in enumerate(spec.agents)}


def _random_actions(env: TorchMPEEnv, rng: np.random.Generator) -> dict[str, torch.Tensor]:
    actions = {}
    for name, spec in env.groups.items():
        space = spec.action_space
        if env.continuous_actions:
            # Out-of-range entries check the clipping both sides apply.
            values = rng.uniform(-0.1, 1.1, (env.num_envs, spec.num_agents, *space.shape))
            actions[name] = torch.as_tensor(values.astype(np.float32))
        else:
            actions[name] = torch.as_tensor(rng.integers(space.n, size=(env.num_envs,
                                                                        spec.num_agents)))
    return actions


def _check_episode(task: str, kwargs: dict[str, Any], continuous: bool,
                   clustered: bool = False) -> dict[str, int]:
    """Run one episode on both; return counts of what the episode exercised."""
    mpe2_envs = [MPE2[task].parallel_env(continuous_actions=continuous, max_cycles=MAX_CYCLES,
                                         **kwargs) for _ in range(NUM_COPIES)]
    mpe2_obs = [env.reset(seed=seed)[0] for seed, env in enumerate(mpe2_envs)]
    if clustered:  # start the agents overlapping so contact forces act from step one
        for env in mpe2_envs:
            for i, agent in enumerate(env.unwrapped.world.agents):
                agent.state.p_pos = np.array([0.05 * i, -0.03 * i])
            mpe2_obs = [{a: env.unwrapped.observe(a) for a in env.agents} for env in mpe2_envs]
    env = TASKS[task](num_envs=NUM_COPIES, max_cycles=MAX_CYCLES, continuous_actions=continuous,
                      dtype=torch.float64, **kwargs)
    env.reset(seed=0)
    env.set_world(_world_of(mpe2_envs))
    torch_obs = _per_agent(env, env.observe())
    for agent, obs in torch_obs.items():
        np.testing.assert_allclose(obs, [o[agent] for o in mpe2_obs], atol=1e-5, rtol=0)
    rng = np.random.default_rng(0)
    seen = {"steps": 0, "contacts": 0}
    for step in range(1, MAX_CYCLES + 1):
        actions = _random_actions(env, rng)
        transition = env.advance(actions)
        per_agent_actions = _per_agent(env, actions)
        torch_obs = _per_agent(env, transition.obs)
        torch_rewards = _per_agent(env, {name: transition.reward[:, list(agents)] for name, agents
                                         in env.scenario.groups.items()})
        for copy, mpe2_env in enumerate(mpe2_envs):
            assert mpe2_env.agents == list(env.scenario.agents)
            action = {agent: per_agent_actions[agent][copy] for agent in mpe2_env.agents}
            if not continuous:
                action = {agent: int(value) for agent, value in action.items()}
            obs, rewards, terminations, truncations, _ = mpe2_env.step(action)
            for agent in env.scenario.agents:
                np.testing.assert_allclose(torch_obs[agent][copy], obs[agent], atol=1e-5, rtol=0,
                                           err_msg=f"{task} step {step} {agent} observation")
                np.testing.assert_allclose(torch_rewards[agent][copy], rewards[agent], atol=1e-5,
                                           rtol=0, err_msg=f"{task} step {step} {agent} reward")
                assert not terminations[agent]
                assert truncations[agent] == transition.truncated == (step == MAX_CYCLES)
            np.testing.assert_allclose(_state(transition.obs)[copy], mpe2_env.state(),
                                       atol=1e-5, rtol=0, err_msg=f"{task} step {step} state")
        seen["steps"] += 1
        seen["contacts"] += int(bool((env.scenario.physics.contact_forces(
            env.world.agent_pos).abs() > 1e-3).any()))
    assert all(mpe2_env.agents == [] for mpe2_env in mpe2_envs)
    return seen


def _state(obs: dict[str, torch.Tensor]) -> np.ndarray:
    return torch.cat([o.flatten(1) for o in obs.values()], dim=-1).numpy()


@pytest.mark.parametrize("continuous", [False, True], ids=["discrete", "continuous"])
@pytest.mark.parametrize(("task", "kwargs"), [
    ("simple_spread_v3", {}),
    ("simple_spread_v3", {"N": 5, "local_ratio": 0.2}),
    ("simple_speaker_listener_v4", {}),
    ("simple_reference_v3", {}),
    ("simple_reference_v3", {"local_ratio": 0.9}),
], ids=["spread", "spread_N5", "speaker_listener", "reference", "reference_lr09"])
def test_episode_matches_mpe2(task: str, kwargs: dict[str, Any], continuous: bool) -> None:
    seen = _check_episode(task, kwargs, continuous)
    assert seen["steps"] == MAX_CYCLES


@pytest.mark.parametrize("continuous", [False, True], ids=["discrete", "continuous"])
def test_spread_contacts_match_mpe2(continuous: bool) -> None:
    """Agents that start overlapping push each other apart exactly as in mpe2."""
    seen = _check_episode("simple_spread_v3", {"N": 4}, continuous, clustered=True)
    assert seen["contacts"] > 0, "the episode must exercise contact forces"
