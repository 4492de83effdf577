"""MAPPO's ``algo.critic_input``: the global state alone (``state``) or the agent's own
observation followed by it (``obs_state``), read through the observation's encoder."""

from __future__ import annotations

import pytest
import torch

from marl.algos.ppo import PPO
from marl.build import build_env, make_learner
from marl.config import ConfigError, load
from marl.groups import AgentGroup
from marl.logging import EpisodeTracker
from marl.nets import ComposedGroupNet
from marl.nets.recurrent import RecurrentGroupNet

CPU = torch.device("cpu")
TINY = {"env.num_envs": "2", "algo.num_steps": "4", "algo.update_epochs": "1",
        "algo.num_minibatches": "1", "groups.hidden": "[16, 16]", "torch_threads": "1",
        "env.task": "torch/simple_spread_v3", "algo.name": "mappo",
        "algo.critic_input": "obs_state"}


def _learner(**overrides: str) -> tuple[object, PPO]:
    config = load(overrides={**TINY, **overrides})
    env = build_env(config, CPU)
    learner = make_learner(env, config, CPU)
    assert isinstance(learner, PPO)
    return env, learner


def _group(learner: PPO) -> AgentGroup:
    group = learner.groups["agent"]
    assert isinstance(group, AgentGroup)
    return group


def _train(learner: PPO, updates: int = 3) -> dict[str, float]:
    tracker = EpisodeTracker({n: s.num_agents for n, s in learner.env.groups.items()},
                             learner.env.num_envs, CPU)
    losses: dict[str, float] = {}
    for _ in range(updates):
        learner.collect(tracker)
        losses = learner.update(0.0)
    return losses


def test_obs_state_is_each_agents_observation_then_the_state() -> None:
    env, learner = _learner()
    obs = torch.randn(5, 3, 18)
    state = torch.randn(5, 54)
    joined = learner.critic_input("agent", obs, state)
    assert joined.shape == (5, 3, 18 + 54)
    for agent in range(3):
        assert torch.equal(joined[:, agent, :18], obs[:, agent])
        assert torch.equal(joined[:, agent, 18:], state)
    plain = learner.critic_input("agent", obs, None)  # no env.state(): the observations
    assert torch.equal(plain[:, 1, 18:], obs.flatten(-2))
    env.close()  # type: ignore[attr-defined]


def test_the_default_critic_reads_the_state_alone() -> None:
    env, learner = _learner(**{"algo.critic_input": "state"})
    obs, state = torch.randn(5, 3, 18), torch.randn(5, 54)
    assert torch.equal(learner.critic_input("agent", obs, state),
                       state.unsqueeze(1).expand(5, 3, 54))
    env.close()  # type: ignore[attr-defined]


FORMS = [("shared", "batched"), ("independent", "batched"), ("independent", "fork"),
         ("independent", "loop")]


@pytest.mark.parametrize(("sharing", "backend"), FORMS)
def test_entity_critic_reads_the_state_as_one_more_row(sharing: str, backend: str) -> None:
    env, learner = _learner(**{"groups.entity_layout": "mpe_spread",
                               "groups.sharing": sharing, "groups.backend": backend})
    critic = _group(learner).critic
    assert isinstance(critic, ComposedGroupNet) and critic.encoder_name == "entity"
    layout = critic.layout
    assert layout is not None
    last = layout.slices[-1]
    assert (last.kind, last.start, last.count, last.width, last.always_present) == (
        "state", 18, 1, 54, True)
    assert layout.num_entities == 1 + 3 + 2 + 1
    torch.manual_seed(0)
    x = torch.randn(4, 3, 18 + 54)
    with torch.no_grad():
        base = critic(x)
        own = x.clone()
        own[:, 0, :4] += 1.0  # agent 0's own state: only its value moves
        moved = critic(own)
        shared = x.clone()
        shared[:, :, 18:] += 1.0  # the global state: every agent's value moves
        everyone = critic(shared)
    assert not torch.allclose(moved[:, 0], base[:, 0])
    assert torch.equal(moved[:, 1:], base[:, 1:])
    assert all(not torch.allclose(everyone[:, a], base[:, a]) for a in range(3))
    env.close()  # type: ignore[attr-defined]


def test_mlp_critic_reads_observation_and_state() -> None:
    env, learner = _learner()
    critic = _group(learner).critic
    x = torch.randn(4, 3, 18 + 54)
    with torch.no_grad():
        base = critic(x)
        obs_moved, state_moved = x.clone(), x.clone()
        obs_moved[:, 2, :18] += 1.0
        state_moved[:, :, 18:] += 1.0
        assert not torch.allclose(critic(obs_moved)[:, 2], base[:, 2])
        assert not torch.allclose(critic(state_moved), base)
    with pytest.raises(ValueError, match=r"\[\.\.\., 3, 72\]"):
        critic(torch.randn(4, 3, 54))  # the state alone no longer fits
    env.close()  # type: ignore[attr-defined]


@pytest.mark.parametrize("norm", ["true", "false"])
def test_obs_state_critic_trains_its_encoder(norm: str) -> None:
    """With and without observation (and so state) normalisation and value normalisation;
    the stored critic input is the normalised observation then the normalised state."""
    env, learner = _learner(**{"groups.entity_layout": "mpe_spread", "algo.obs_norm": norm,
                               "algo.value_norm": norm})
    assert (learner.state_norm is not None) == (norm == "true")
    critic = _group(learner).critic
    assert isinstance(critic, ComposedGroupNet) and critic.encoder is not None
    before = [p.detach().clone() for p in critic.encoder.parameters()]
    losses = _train(learner)
    assert all(torch.isfinite(torch.tensor(v)) for v in losses.values())
    assert any(not torch.equal(b, a)
               for b, a in zip(before, critic.encoder.parameters(), strict=True))
    assert learner.state is not None
    batch = learner._flat_batches()["agent"]
    store = learner.storage["agent"]
    steps, envs = store.obs.shape[:2]
    joined = batch.critic_input.reshape(steps, envs, 3, -1)
    torch.testing.assert_close(joined[..., :18], store.obs)
    torch.testing.assert_close(joined[:, :, 1, 18:], learner.state)
    env.close()  # type: ignore[attr-defined]


def test_gru_agents_keep_a_feed_forward_obs_state_critic() -> None:
    env, learner = _learner(**{"groups.rnn": "gru", "groups.hidden": "[16]",
                               "groups.rnn_hidden": "8"})
    group = _group(learner)
    assert isinstance(group.actor, RecurrentGroupNet)
    assert not isinstance(group.critic, RecurrentGroupNet)
    losses = _train(learner)
    assert all(torch.isfinite(torch.tensor(v)) for v in losses.values())
    env.close()  # type: ignore[attr-defined]


def test_obs_state_is_refused_where_it_means_nothing() -> None:
    with pytest.raises(ConfigError, match="algo.name=ippo has none"):
        load(overrides={**TINY, "algo.name": "ippo"})
    with pytest.raises(ConfigError, match="algo.critic_input"):
        load(overrides={**TINY, "algo.critic_input": "joint"})
    config = load(overrides={**TINY, "env.task": "toy_factories:image_obs"})
    env = build_env(config, CPU)
    with pytest.raises(ConfigError, match="flat observations"):
        make_learner(env, config, CPU)
    env.close()
