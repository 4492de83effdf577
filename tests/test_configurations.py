"""Every documented switch trains: sharing modes, backends, MAPPO, continuous actions, groups."""


import pytest
import torch

from marl.algos.ppo import PPO
from marl.build import build_env
from marl.config import load
from marl.logging import EpisodeTracker


def _one_iteration(**overrides: str) -> tuple[PPO, dict[str, float]]:
    config = load(overrides={"env.num_envs": "2", "algo.num_steps": "8",
                             "algo.update_epochs": "1", **overrides})
    torch.manual_seed(0)
    env = build_env(config, torch.device("cpu"))
    algo = PPO(env, config, torch.device("cpu"))
    before = [p.detach().clone() for p in algo.groups.parameters()]
    tracker = EpisodeTracker({n: s.num_agents for n, s in env.groups.items()}, 2,
                             torch.device("cpu"))
    algo.collect(tracker)
    metrics = algo.update(0.0)
    env.close()
    changed = [not torch.equal(a, b) for a, b in zip(before, algo.groups.parameters(),
                                                     strict=True)]
    assert all(changed), "some parameters were not trained"
    return algo, metrics


@pytest.mark.parametrize("overrides", [
    {"groups.sharing": "shared"},
    {"groups.sharing": "shared", "groups.agent_id": "false"},
    {"groups.sharing": "independent", "groups.backend": "batched"},
    {"groups.sharing": "independent", "groups.backend": "fork"},
    {"groups.sharing": "independent", "groups.backend": "loop", "optim.mode": "per_agent"},
    {"algo.name": "mappo"},
    {"algo.name": "mappo", "groups.sharing": "independent"},
    {"env.kwargs.continuous_actions": "true"},
    {"algo.value_norm": "true", "algo.reward_norm": "episode", "optim.clip_mode": "group"},
    {"algo.clip_vloss": "true", "algo.ent_coef_final": "0.0", "algo.obs_norm": "false"},
], ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()))
def test_simple_spread_variants_train(overrides: dict[str, str]) -> None:
    _, metrics = _one_iteration(**overrides)
    assert all(torch.isfinite(torch.tensor(v)) for v in metrics.values())
    assert "agent/policy" in metrics and "agent/value" in metrics


def test_mappo_critic_sees_the_global_state() -> None:
    algo, _ = _one_iteration(**{"algo.name": "mappo"})
    assert algo.use_state and algo.state is not None
    group = algo.groups["agent"]
    obs = algo.storage["agent"].obs
    critic_input = algo.critic_input("agent", obs, algo.state)
    assert critic_input.shape[-1] == 54  # simple_spread_v3's state, not the 18-wide obs
    torch.testing.assert_close(critic_input[..., 0, :], critic_input[..., 1, :])
    assert group.critic(critic_input).shape[-2:] == (3, 1)


def test_two_groups_speaker_listener() -> None:
    algo, metrics = _one_iteration(**{"env.task": "mpe2/simple_speaker_listener_v4",
                                      "groups.overrides": "{speaker: independent}"})
    assert set(algo.groups) == {"speaker", "listener"}
    assert {"speaker/loss", "listener/loss"} <= set(metrics)


def test_mappo_without_env_state_concatenates_group_observations() -> None:
    algo, _ = _one_iteration(**{"algo.name": "mappo",
                                "env.task": "toy_factories:coop_match_without_state"})
    assert not algo.use_state
    critic_input = algo.critic_input("agent", algo.storage["agent"].obs, None)
    obs = algo.storage["agent"].obs
    torch.testing.assert_close(critic_input[..., 1, :], obs.flatten(-2))


def test_agents_that_leave_early_are_masked() -> None:
    algo, _ = _one_iteration(**{"env.task": "toy/leave_early"})
    alive = algo.storage["agent"].alive
    assert not alive.all() and alive.any()
