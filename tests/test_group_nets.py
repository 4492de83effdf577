"""Composed group networks built from ``config.groups`` (:mod:`marl.group_nets`).

Flat observations without trunk options must build exactly today's networks; image and
entity observations get their encoder in every learner; wrong encoders are one-line errors.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from marl.algos.ddpg import DDPG
from marl.algos.ppo import PPO
from marl.algos.q_learning import QLearning
from marl.build import build_env, make_learner
from marl.config import ConfigError, GroupsConfig, load
from marl.config_rules import ENTITY_LAYOUT_PRESETS
from marl.group_nets import (
    ENTITY_LAYOUT_BUILDERS,
    build_group_net,
    entity_layout,
    resolved_encoders,
)
from marl.groups import AgentGroup
from marl.logging import EpisodeTracker
from marl.nets import ComposedGroupNet, make_group_net, mpe_spread_layout

CPU = torch.device("cpu")
FORMS = [("shared", "batched"), ("independent", "batched"), ("independent", "fork"),
         ("independent", "loop")]
TINY = {"env.num_envs": "2", "algo.num_steps": "4", "algo.update_epochs": "1",
        "algo.num_minibatches": "1", "groups.hidden": "[16, 16]", "torch_threads": "1",
        "algo.warmup_steps": "8", "algo.batch_size": "8", "algo.buffer_size": "64"}


def _groups(**values: object) -> GroupsConfig:
    return GroupsConfig(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize(("sharing", "backend"), FORMS)
def test_flat_observations_build_todays_network_bit_for_bit(sharing: str, backend: str) -> None:
    torch.manual_seed(3)
    old = make_group_net(sharing, 18, 5, 3, hidden=(64, 64), out_gain=0.01, backend=backend)
    torch.manual_seed(3)
    new = build_group_net(_groups(sharing=sharing, backend=backend), sharing, (18,), 5, 3,
                          0.01, "agent")
    assert type(new) is type(old)
    old_state, new_state = old.state_dict(), new.state_dict()
    assert list(new_state) == list(old_state)
    assert all(torch.equal(old_state[key], new_state[key]) for key in old_state)
    x = torch.randn(4, 3, 18)
    assert torch.equal(old(x), new(x))


@pytest.mark.parametrize(("sharing", "backend"), FORMS)
def test_layer_norm_and_residual_add_layer_norm_weights_in_every_form(
        sharing: str, backend: str) -> None:
    plain = build_group_net(_groups(backend=backend), sharing, (18,), 5, 3, 1.0, "agent")
    groups = _groups(backend=backend, layer_norm=True, residual=True)
    torch.manual_seed(0)
    net = build_group_net(groups, sharing, (18,), 5, 3, 1.0, "agent")
    assert isinstance(net, ComposedGroupNet) and net.encoder is None
    names = set(dict(net.named_parameters()))
    assert names != set(dict(plain.named_parameters()))
    assert any("norm" in name for name in names)
    # LayerNorm weights start at one: the trunk is exactly norm(W h + b) at init.
    norm_weights = [p for name, p in net.named_parameters() if "norm" in name and "weight" in name]
    assert norm_weights and all(torch.equal(p, torch.ones_like(p)) for p in norm_weights)
    # The same seed gives the same function whatever the backend.
    torch.manual_seed(0)
    reference = build_group_net(_groups(backend="loop", layer_norm=True, residual=True),
                                sharing, (18,), 5, 3, 1.0, "agent")
    x = torch.randn(6, 3, 18)
    torch.testing.assert_close(net(x), reference(x), rtol=1e-5, atol=1e-6)


def test_shared_network_appends_the_agent_id_after_the_encoder() -> None:
    torch.manual_seed(1)
    net = build_group_net(_groups(), "shared", (7, 7, 3), 4, 2, 1.0, "agent")
    assert isinstance(net, ComposedGroupNet) and net.encoder is not None
    images = torch.rand(5, 2, 7, 7, 3)
    features = net.encoder(images)  # [5, 2, 64]
    ids = torch.eye(2).expand(5, -1, -1)
    expected = net.trunk(torch.cat([features, ids], dim=-1))
    # The network reads observations flattened, as storage keeps them.
    assert torch.equal(net(images.reshape(5, 2, -1)), expected)
    # Identical observations still give different outputs per agent (the ID).
    same = images[:, :1].expand(-1, 2, -1, -1, -1).reshape(5, 2, -1)
    out = net(same)
    assert not torch.allclose(out[:, 0], out[:, 1])


@pytest.mark.parametrize("backend", ["batched", "fork", "loop"])
@pytest.mark.parametrize("shape", [(7, 7, 3), (4, 3)])
def test_independent_encoders_keep_agents_apart(backend: str, shape: tuple[int, ...]) -> None:
    torch.manual_seed(2)
    net = build_group_net(_groups(backend=backend), "independent", shape, 3, 3, 1.0, "agent")
    assert isinstance(net, ComposedGroupNet)
    assert net.encoder_name == ("cnn" if len(shape) == 3 else "entity")
    x = torch.rand(4, 3, int(torch.Size(shape).numel()))
    changed = x.clone()
    changed[:, 0] += 1.0
    before, after = net(x), net(changed)
    assert not torch.allclose(before[:, 0], after[:, 0])
    assert torch.equal(before[:, 1:], after[:, 1:])
    if backend == "loop":  # one parameter list per agent, none shared
        lists = net.per_agent_parameters()
        assert len(lists) == 3
        ids = [{id(p) for p in params} for params in lists]
        assert not ids[0] & ids[1] and not ids[1] & ids[2]
        assert sum(len(params) for params in lists) == len(list(net.parameters()))


def test_entity_layout_list_matches_the_preset() -> None:
    slices = [{"kind": "self", "start": 0, "count": 1, "width": 4, "always_present": True},
              {"kind": "landmark", "start": 4, "count": 3, "width": 2},
              {"kind": "agent", "start": 10, "count": 2, "width": 2}]
    assert entity_layout(slices, (18,)) == mpe_spread_layout(3)
    assert entity_layout("mpe_spread", (18,)) == mpe_spread_layout(3)
    # Spread's trailing communication features (2(N - 1)) are read by no slice.
    assert mpe_spread_layout(3).stop == 14 and mpe_spread_layout(5).stop == 22
    assert entity_layout("mpe_spread", (7, 7, 3)) is None  # layouts read flat observations
    assert set(ENTITY_LAYOUT_PRESETS) == {"auto", *ENTITY_LAYOUT_BUILDERS}
    with pytest.raises(ValueError, match="6N features"):
        entity_layout("mpe_spread", (20,))


def _first_obs(module: object, **kwargs: object) -> tuple[dict[str, object], object]:
    env = module.parallel_env(**kwargs)  # type: ignore[attr-defined]
    observations, _ = env.reset(seed=5)
    return observations, env.unwrapped.world


def _rows(layout: object, obs: object) -> torch.Tensor:
    return layout.rows(torch.as_tensor(obs, dtype=torch.float32))  # type: ignore[attr-defined]


def test_mpe_presets_read_each_entity_from_the_world_state() -> None:
    """Each preset row holds what the scenario says it does: own velocity, every numbered
    landmark's position relative to the agent, the goal colour, the message."""
    from mpe2 import simple_reference_v3, simple_speaker_listener_v4

    observations, world = _first_obs(simple_reference_v3)
    for agent in world.agents:
        obs = observations[agent.name]
        layout = entity_layout("mpe_reference", obs.shape)
        assert layout is not None
        rows, kinds = _rows(layout, obs), layout.kinds
        width = max(item.width for item in layout.slices)
        assert kinds == ["self", "landmark_0", "landmark_1", "landmark_2", "goal", "message"]
        assert torch.allclose(rows[0, :2], torch.as_tensor(agent.state.p_vel).float())
        for index, landmark in enumerate(world.landmarks):
            relative = torch.as_tensor(landmark.state.p_pos - agent.state.p_pos).float()
            assert torch.allclose(rows[1 + index, :2], relative)
            assert rows[1 + index, width + kinds.index(f"landmark_{index}")] == 1
        assert torch.allclose(rows[4, :3], torch.as_tensor(agent.goal_b.color).float())
        other = next(item for item in world.agents if item is not agent)
        assert torch.allclose(rows[5, :10], torch.as_tensor(other.state.c).float())
    observations, world = _first_obs(simple_speaker_listener_v4)
    listener = next(agent for agent in world.agents if agent.movable)
    obs = observations[listener.name]
    layout = entity_layout("mpe_speaker_listener", obs.shape)
    assert layout is not None and layout.num_entities == 5
    rows = _rows(layout, obs)
    for index, landmark in enumerate(world.landmarks):
        relative = torch.as_tensor(landmark.state.p_pos - listener.state.p_pos).float()
        assert torch.allclose(rows[1 + index, :2], relative)
    speaker = next(agent for agent in world.agents if not agent.movable)
    assert observations[speaker.name].shape == (3,)
    assert entity_layout("mpe_speaker_listener", (3,)) is None  # one colour: no entities


def test_auto_layout_names_spreads_preset_only() -> None:
    """``auto``: spread's layout on spread (any N, mpe2 and the torch port), where the
    entity encoder was measured to learn better; no layout on every other task, also on
    reference and speaker-listener, which have presets but measured no better than the MLP."""
    assert entity_layout("auto", (18,), "mpe2/simple_spread_v3") == mpe_spread_layout(3)
    assert entity_layout("auto", (30,), "torch/simple_spread_v3") == mpe_spread_layout(5)
    for task, size in (("mpe2/simple_reference_v3", 21), ("mpe2/simple_speaker_listener_v4", 11),
                       ("toy/coop_match", 18), ("my_package.envs:make", 18)):
        assert entity_layout("auto", (size,), task) is None
    assert entity_layout("auto", (18,)) is None  # no task known
    with pytest.raises(ValueError, match=r"'mpe_reference' needs .* 21 features.* has 24"):
        entity_layout("mpe_reference", (24,))
    with pytest.raises(ValueError, match=r"'mpe_speaker_listener' needs .* of 11 or 3 "
                                         r"features, but this one has 21"):
        entity_layout("mpe_speaker_listener", (21,))


def test_auto_layout_builds_the_explicit_presets_network() -> None:
    """``auto`` on spread is ``groups.encoder=entity groups.entity_layout=mpe_spread``: the
    same parameters from the same seed, the same outputs."""
    nets = []
    for encoder, layout in (("entity", "mpe_spread"), ("auto", "auto")):
        torch.manual_seed(4)
        nets.append(build_group_net(_groups(encoder=encoder, entity_layout=layout), "shared",
                                    (18,), 5, 3, 0.01, "agent", task="mpe2/simple_spread_v3"))
    explicit, auto = (net.state_dict() for net in nets)
    assert list(auto) == list(explicit) and any("attention" in key or "entity" in key
                                                for key in auto)
    assert all(torch.equal(explicit[key], auto[key]) for key in explicit)
    x = torch.randn(4, 3, 18)
    assert torch.equal(nets[0](x), nets[1](x))


@pytest.mark.parametrize("layout", ["mpe_speaker_listener", "auto"])
def test_speaker_listener_layout_gives_the_listener_entities_and_the_speaker_an_mlp(
        layout: str) -> None:
    """The preset reads the listener's rows and leaves the speaker its MLP; ``auto`` (the
    recommended hpset) leaves both MLPs: the same networks as the defaults."""
    from marl.group_nets import encoder_note

    task = "mpe2/simple_speaker_listener_v4"
    config = load(overrides={**TINY, "env.task": task, "hpset": "ippo_entity_mpe",
                             "groups.entity_layout": layout})
    env = build_env(config, CPU)
    listener = "entity" if layout != "auto" else "mlp"
    assert resolved_encoders(env.groups, config.groups, task) == {
        "speaker": "mlp", "listener": listener}
    assert encoder_note(env, config) == "groups.encoder=auto chose: speaker=mlp, " + (
        "listener=entity (mpe_speaker_listener layout)" if layout != "auto" else "listener=mlp")
    torch.manual_seed(6)
    learner = make_learner(env, config, CPU)
    assert isinstance(learner, PPO)
    group = learner.groups["listener"]
    assert isinstance(group, AgentGroup)
    if layout == "auto":
        defaults = load(overrides={**TINY, "env.task": task})
        torch.manual_seed(6)
        plain = make_learner(build_env(defaults, CPU), defaults, CPU)
        assert isinstance(plain, PPO)
        mine, theirs = learner.groups.state_dict(), plain.groups.state_dict()
        assert list(mine) == list(theirs)
        assert all(torch.equal(mine[key], theirs[key]) for key in mine)
    else:
        _encoder_moves(group.actor, lambda: _train(learner))
    env.close()


def _learner(task: str, **overrides: str) -> tuple[object, object]:
    config = load(overrides={**TINY, "env.task": task, **overrides})
    env = build_env(config, CPU)
    return env, make_learner(env, config, CPU)


def _train(learner: PPO | QLearning | DDPG) -> dict[str, float]:
    tracker = EpisodeTracker({n: s.num_agents for n, s in learner.env.groups.items()},
                             learner.env.num_envs, CPU)
    losses: dict[str, float] = {}
    for _ in range(3):
        learner.collect(tracker)
        losses = learner.update(0.0)
    return losses


def _encoder_moves(net: nn.Module, train: object) -> None:
    assert isinstance(net, ComposedGroupNet) and net.encoder is not None
    before = [p.detach().clone() for p in net.encoder.parameters()]
    losses = train()  # type: ignore[operator]
    assert all(torch.isfinite(torch.tensor(v)) for v in losses.values())
    after = list(net.encoder.parameters())
    assert any(not torch.equal(b, a) for b, a in zip(before, after, strict=True))


@pytest.mark.parametrize(("sharing", "backend"), FORMS)
@pytest.mark.parametrize("task", ["image_obs", "entity_obs"])
def test_ippo_trains_the_encoders_of_policy_and_critic(task: str, sharing: str,
                                                       backend: str) -> None:
    env, learner = _learner(f"toy_factories:{task}", **{"groups.sharing": sharing,
                                                       "groups.backend": backend})
    assert isinstance(learner, PPO)
    group = learner.groups["agent"]
    assert isinstance(group, AgentGroup)
    name = "cnn" if task == "image_obs" else "entity"
    assert isinstance(group.critic, ComposedGroupNet) and group.critic.encoder_name == name
    _encoder_moves(group.actor, lambda: _train(learner))
    env.close()  # type: ignore[attr-defined]


def test_mappo_state_critic_stays_an_mlp_on_images() -> None:
    env, learner = _learner("toy_factories:image_obs", **{"algo.name": "mappo"})
    assert isinstance(learner, PPO)
    group = learner.groups["agent"]
    assert isinstance(group, AgentGroup)
    assert isinstance(group.actor, ComposedGroupNet) and group.actor.encoder_name == "cnn"
    assert not isinstance(group.critic, ComposedGroupNet)
    env.close()  # type: ignore[attr-defined]


def test_vdn_trains_a_cnn_q_network() -> None:
    env, learner = _learner("toy_factories:image_obs", **{"algo.name": "vdn",
                                                         "groups.sharing": "independent"})
    assert isinstance(learner, QLearning)
    _encoder_moves(learner.q["agent"], lambda: _train(learner))
    env.close()  # type: ignore[attr-defined]


def test_entity_layout_on_simple_spread_trains_ippo_and_maddpg_actors() -> None:
    layout = {"groups.encoder": "entity", "groups.entity_layout": "mpe_spread",
              "groups.entity_pool": "mean"}
    _, learner = _learner("torch/simple_spread_v3", **layout)
    assert isinstance(learner, PPO)
    assert resolved_encoders(learner.env.groups, learner.config.groups) == {"agent": "entity"}
    group = learner.groups["agent"]
    assert isinstance(group, AgentGroup)
    _encoder_moves(group.actor, lambda: _train(learner))
    _, learner = _learner("torch/simple_spread_v3", **layout, **{
        "algo.name": "maddpg", "env.kwargs.continuous_actions": "true"})
    assert isinstance(learner, DDPG)
    assert isinstance(learner.actor["agent"], ComposedGroupNet)
    critic = learner.critics[0]
    assert isinstance(critic, nn.ModuleDict)
    assert not isinstance(critic["agent"], ComposedGroupNet)  # state + joint actions: an MLP
    _encoder_moves(learner.actor["agent"], lambda: _train(learner))


def test_auto_choice_follows_the_observation_shape() -> None:
    config = load(overrides={**TINY, "env.task": "toy_factories:image_obs"})
    env = build_env(config, CPU)
    assert resolved_encoders(env.groups, config.groups) == {"agent": "cnn"}
    env.close()
    config = load(overrides={**TINY, "env.task": "torch/simple_spread_v3"})
    env = build_env(config, CPU)
    assert resolved_encoders(env.groups, config.groups) == {"agent": "mlp"}


@pytest.mark.parametrize(("overrides", "message"), [
    ({"groups.entity_layout": "spread"},
     r"groups\.entity_layout: expected one of auto, mpe_spread"),
    ({"groups.entity_layout": "[{kind: a, start: 0, count: 1}]"}, r"\[0\].*missing width"),
    ({"groups.entity_layout": "mpe_spread", "groups.encoder": "mlp"},
     r"feeds the entity encoder, but groups\.encoder=mlp"),
    ({"groups.encoder": "rnn"}, r"groups\.encoder: expected one of auto, mlp, cnn, entity"),
    ({"groups.entity_pool": "sum"}, r"groups\.entity_pool: expected one of attention"),
])
def test_bad_encoder_keys_are_refused_at_load(overrides: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load(overrides=overrides)


def test_cnn_on_flat_observations_is_one_line_through_the_cli(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    result = subprocess.run(
        [sys.executable, "-m", "marl.cli", "train", "env.task=torch/simple_spread_v3",
         "groups.encoder=cnn", "env.num_envs=2", f"run.dir={tmp_path / 'run'}",
         "torch_threads=1"], capture_output=True, text=True, env=env, check=False, timeout=120)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert "groups.encoder=cnn, group 'agent'" in lines[0]
    assert "shape [18]" in lines[0] and "cnn takes [H, W, C]" in lines[0]
    assert "entity takes [N, F]" in lines[0]
