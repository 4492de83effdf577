"""IQL, VDN, QMIX, MADDPG and MATD3: wiring, exploration, delayed updates, bad input."""

from pathlib import Path

import pytest
import torch
from torch import nn

from marl.algos import off_policy
from marl.algos.ddpg import DDPG
from marl.algos.off_policy import OffPolicy
from marl.algos.q_learning import QLearning, QMixer
from marl.build import build_env, make_learner
from marl.config import ConfigError, load
from marl.logging import EpisodeTracker
from marl.trainer import train

CPU = torch.device("cpu")


pytestmark = pytest.mark.usefixtures("one_thread")


TASKS = {"iql": "toy/coop_match", "vdn": "toy/coop_match", "qmix": "toy/coop_match",
         "maddpg": "toy/reach", "matd3": "toy/reach"}


def _build(algo: str, **overrides: str) -> OffPolicy:
    config = load(overrides={"algo.name": algo, "env.task": TASKS[algo], "env.num_envs": "4",
                             "algo.num_steps": "4", "algo.warmup_steps": "16",
                             "algo.batch_size": "8", "groups.hidden": "[8]",
                             "algo.buffer_size": "64", **overrides})
    algo_object = make_learner(build_env(config, CPU), config, CPU)
    assert isinstance(algo_object, OffPolicy)
    return algo_object


def _tracker(algo: OffPolicy) -> EpisodeTracker:
    return EpisodeTracker(algo.num_agents, algo.env.num_envs, CPU)


def _snapshot(module: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


def _changed(before: list[torch.Tensor], module: nn.Module) -> bool:
    return any(not torch.equal(a, b) for a, b in zip(before, module.parameters(), strict=True))


SETUPS = [("shared", "batched"), ("independent", "batched"), ("independent", "fork"),
          ("independent", "loop")]


@pytest.mark.parametrize("sharing,backend", SETUPS)
@pytest.mark.parametrize("name", ["iql", "vdn", "qmix", "maddpg", "matd3"])
def test_one_update_trains_every_network_and_moves_every_target(name: str, sharing: str,
                                                                backend: str) -> None:
    algo = _build(name, **{"groups.sharing": sharing, "groups.backend": backend})
    tracker = _tracker(algo)
    while algo.replay.num_transitions < 16:
        algo.collect(tracker)
    online = [pair[0] for pair in algo.target_pairs()]
    targets = [pair[1] for pair in algo.target_pairs()]
    before_online = [_snapshot(m) for m in online]
    before_target = [_snapshot(m) for m in targets]
    metrics = algo.update(0.0)
    assert metrics and all(torch.isfinite(torch.tensor(v)) for v in metrics.values())
    # Every online network (Q nets, mixer, actors, critics) stepped by the one optimiser...
    optimised = {id(p) for o in algo.optimizer.optimizers for g in o.param_groups
                 for p in g["params"]}
    for module, before in zip(online, before_online, strict=True):
        assert {id(p) for p in module.parameters()} <= optimised
        assert _changed(before, module)
    # ...and every target moved towards it, while targets are never optimised.
    for module, before in zip(targets, before_target, strict=True):
        assert _changed(before, module)
        assert not {id(p) for p in module.parameters()} & optimised


def test_matd3_updates_actors_and_targets_every_policy_delay_steps() -> None:
    algo = _build("matd3", **{"algo.policy_delay": "3", "algo.gradient_steps": "1"})
    assert isinstance(algo, DDPG)
    tracker = _tracker(algo)
    while algo.replay.num_transitions < 16:
        algo.collect(tracker)
    actor_changes, critic_changes, target_changes = [], [], []
    for _ in range(7):
        actor, critic = _snapshot(algo.actor), _snapshot(algo.critics)
        target = _snapshot(algo.target_actor)
        metrics = algo.update(0.0)
        actor_changes.append(_changed(actor, algo.actor))
        critic_changes.append(_changed(critic, algo.critics))
        target_changes.append(_changed(target, algo.target_actor))
        assert ("agent/actor_loss" in metrics) == actor_changes[-1]
    assert actor_changes == [True, False, False, True, False, False, True]
    assert target_changes == actor_changes
    assert all(critic_changes)


def test_maddpg_updates_its_actor_every_step() -> None:
    algo = _build("maddpg", **{"algo.policy_delay": "3"})
    tracker = _tracker(algo)
    while algo.replay.num_transitions < 16:
        algo.collect(tracker)
    assert isinstance(algo, DDPG)
    for _ in range(3):
        actor = _snapshot(algo.actor)
        algo.update(0.0)
        assert _changed(actor, algo.actor)


def test_actor_loss_does_not_push_the_critic() -> None:
    algo = _build("maddpg")
    assert isinstance(algo, DDPG)
    tracker = _tracker(algo)
    while algo.replay.num_transitions < 16:
        algo.collect(tracker)
    sample = algo.replay.sample(8, 1, 0.9)
    critic_only = algo.losses(sample)
    algo.optimizer.zero_grad()
    critic_only["agent/critic_loss"].backward()
    grads = [p.grad.clone() for p in algo.critics.parameters() if p.grad is not None]
    algo.optimizer.zero_grad()
    algo.losses(sample)["loss"].backward()
    summed = [p.grad for p in algo.critics.parameters() if p.grad is not None]
    assert len(grads) == len(summed) > 0
    for a, b in zip(grads, summed, strict=True):
        torch.testing.assert_close(a, b)
    assert all(p.grad is not None for p in algo.actor.parameters())


def test_epsilon_follows_its_schedule_and_evaluation_is_greedy() -> None:
    algo = _build("vdn", **{"algo.eps_start": "1.0", "algo.eps_end": "0.1",
                            "algo.eps_anneal_steps": "100"})
    assert isinstance(algo, QLearning)
    assert algo.epsilon() == 1.0
    algo.env_steps = 50
    assert algo.epsilon() == pytest.approx(0.55)
    algo.env_steps = 1000
    assert algo.epsilon() == pytest.approx(0.1)
    obs = {"agent": torch.randn(64, 2, 3)}
    greedy = algo.q["agent"](obs["agent"]).argmax(-1)
    assert torch.equal(algo.act(obs, {"agent": None}, explore=False)["agent"], greedy)
    algo.env_steps = 0  # epsilon 1: uniform, so far from always greedy
    explored = algo.act(obs, {"agent": None}, explore=True)["agent"]
    assert (explored != greedy).float().mean() > 0.4


def test_ddpg_explores_with_noise_and_evaluates_deterministically() -> None:
    algo = _build("matd3", **{"algo.exploration_noise": "0.3", "algo.warmup_steps": "0"})
    obs = {"agent": torch.randn(256, 2, 2)}
    deterministic = algo.act(obs, {"agent": None}, explore=False)["agent"]
    assert torch.equal(deterministic, algo.act(obs, {"agent": None}, explore=False)["agent"])
    noisy = algo.act(obs, {"agent": None}, explore=True)["agent"]
    assert noisy.abs().max() <= 1.0
    assert 0.2 < (noisy - deterministic).std() < 0.4


def test_qmix_mixer_is_monotonic_in_every_agent_q() -> None:
    torch.manual_seed(0)
    mixer = QMixer(num_agents=4, state_features=6, embed=8)
    agent_q = torch.randn(128, 4, requires_grad=True)
    state = torch.randn(128, 6)
    (grad,) = torch.autograd.grad(mixer(agent_q, state).sum(), agent_q)
    assert (grad >= 0).all() and (grad > 0).any()


@pytest.mark.parametrize("name,task,fits", [
    ("qmix", "toy/reach", "maddpg or matd3"),
    ("iql", "toy/reach", "maddpg or matd3"),
    ("matd3", "toy/coop_match", "iql, vdn or qmix"),
    ("maddpg", "mpe2/simple_spread_v3", "iql, vdn or qmix"),
])
def test_action_space_mismatch_is_refused_naming_the_algorithms_that_fit(
        tmp_path: Path, name: str, task: str, fits: str) -> None:
    config = load(overrides={"algo.name": name, "env.task": task, "env.num_envs": "2",
                             "run.dir": str(tmp_path / "run"), "run.tensorboard": "false"})
    with pytest.raises(ConfigError, match=fits):
        train(config)


def test_bad_off_policy_settings_are_refused() -> None:
    with pytest.raises(ConfigError, match="algo.n_step: expected an integer >= 1, got 0"):
        _build("vdn", **{"algo.n_step": "0"})
    with pytest.raises(ConfigError, match="algo.target_update"):
        load(overrides={"algo.target_update": "polyak"})


def test_hard_target_updates_copy_every_interval() -> None:
    algo = _build("iql", **{"algo.target_update": "hard", "algo.target_update_interval": "2"})
    assert isinstance(algo, QLearning)
    tracker = _tracker(algo)
    while algo.replay.num_transitions < 16:
        algo.collect(tracker)
    equal = []
    for _ in range(4):
        algo.update(0.0)
        equal.append(all(torch.equal(a, b) for a, b in zip(
            algo.q.parameters(), algo.target_q.parameters(), strict=True)))
    assert equal == [False, True, False, True]


def _targets_equal_online(algo: OffPolicy) -> bool:
    return all(torch.equal(a, b) for online, target in algo.target_pairs()
               for a, b in zip(online.parameters(), target.parameters(), strict=True))


@pytest.mark.parametrize("name,interval,delay,updates", [
    ("matd3", 200, 2, 1000),  # the defaults: 5 copies due
    ("matd3", 4, 2, 200), ("matd3", 6, 3, 200), ("matd3", 5, 2, 200), ("matd3", 3, 4, 200),
    ("maddpg", 4, 2, 40), ("vdn", 3, 2, 30),
])
def test_hard_targets_are_copied_every_interval_whatever_the_policy_delay(
        monkeypatch: pytest.MonkeyPatch, name: str, interval: int, delay: int,
        updates: int) -> None:
    """A hard copy is due after every ``target_update_interval`` updates; under MATD3 the
    actor only trains every ``policy_delay`` updates, which must not skip the copies."""
    algo = _build(name, **{"algo.target_update": "hard", "algo.gradient_steps": "1",
                           "algo.target_update_interval": str(interval),
                           "algo.policy_delay": str(delay)})
    copies: list[int] = []
    real_update = off_policy.update_targets

    def counting(pairs: list[tuple[nn.Module, nn.Module]], tau: float) -> None:
        assert tau == 1.0
        copies.append(algo.num_updates)
        real_update(pairs, tau)

    monkeypatch.setattr(off_policy, "update_targets", counting)
    tracker = _tracker(algo)
    while algo.replay.num_transitions < 16:
        algo.collect(tracker)
    for _ in range(updates):
        algo.update(0.0)
        if algo.num_updates % interval == 0:
            assert _targets_equal_online(algo), f"no copy at update {algo.num_updates}"
    assert copies == list(range(interval, updates + 1, interval))


def test_off_policy_run_resumes_with_its_counters(tmp_path: Path) -> None:
    base = {"algo.name": "qmix", "env.task": "toy/coop_match", "env.num_envs": "4",
            "algo.num_steps": "4", "algo.warmup_steps": "32", "algo.batch_size": "16",
            "train.log_every": "64", "train.checkpoint_every": "64",
            "run.dir": str(tmp_path / "run"), "run.tensorboard": "false",
            "train.progress": "false"}
    first = train(load(overrides={**base, "train.total_env_steps": "128"}))
    assert first.env_steps == 128 and "td_loss" in first.last_metrics
    resumed = train(load(overrides={**base, "train.total_env_steps": "256",
                                    "run.resume": "true"}))
    assert resumed.env_steps == 256
    rows = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert len(rows) == 4


@pytest.mark.parametrize("name,kwargs", [("qmix", {}), ("vdn", {}),
                                         ("matd3", {"env.kwargs.continuous_actions": "true"})])
def test_several_groups_are_mixed_and_criticised_as_one_team(name: str,
                                                             kwargs: dict[str, str]) -> None:
    config = load(overrides={"algo.name": name, "env.task": "mpe2/simple_speaker_listener_v4",
                             "env.num_envs": "2", "algo.num_steps": "4",
                             "algo.warmup_steps": "8", "algo.batch_size": "8",
                             "groups.hidden": "[8]", "algo.buffer_size": "64", **kwargs})
    algo = make_learner(build_env(config, CPU), config, CPU)
    assert isinstance(algo, OffPolicy) and set(algo.num_agents) == {"speaker", "listener"}
    if isinstance(algo, QLearning) and algo.mixer is not None:
        assert algo.mixer.num_agents == 2
    tracker = _tracker(algo)
    while algo.replay.num_transitions < 8:
        algo.collect(tracker)
    before = [_snapshot(online) for online, _ in algo.target_pairs()]
    metrics = algo.update(0.0)
    assert {"speaker/q_taken", "listener/q_taken"} <= set(metrics) or \
        {"speaker/critic_loss", "listener/critic_loss"} <= set(metrics)
    for (online, _), was in zip(algo.target_pairs(), before, strict=True):
        assert _changed(was, online)


@pytest.mark.parametrize("name,n_step", [("iql", 1), ("iql", 3), ("vdn", 3)])
def test_truncation_bootstraps_so_values_reach_the_endless_return(name: str,
                                                                  n_step: int) -> None:
    """toy/endless pays 1 per step forever and is only truncated (every 4 steps): with
    gamma 0.5 the value is 1 / (1 - 0.5) = 2 everywhere. A learner that treated the
    truncation as a termination could not fit it (the observation carries no time)."""
    torch.manual_seed(0)
    config = load(overrides={"algo.name": name, "env.task": "toy/endless",
                             "env.kwargs.max_steps": "4", "env.num_envs": "4",
                             "algo.num_steps": "1", "algo.warmup_steps": "64",
                             "algo.batch_size": "32", "algo.gamma": "0.5",
                             "algo.n_step": str(n_step), "algo.tau": "0.05",
                             "optim.lr": "3e-3", "optim.anneal_lr": "false",
                             "groups.hidden": "[16]", "algo.obs_norm": "false"})
    algo = make_learner(build_env(config, CPU), config, CPU)
    assert isinstance(algo, QLearning)
    tracker = _tracker(algo)
    for _ in range(300):
        algo.collect(tracker)
        algo.update(0.0)
    with torch.no_grad():
        q = algo.q["agent"](torch.ones(1, 2, 4))
    total = q.max(-1).values.sum() if name == "vdn" else q.max(-1).values.mean()
    assert float(total) == pytest.approx(2.0, abs=0.15)


@pytest.mark.parametrize("name", ["vdn", "qmix"])
def test_return_penalty_adds_its_weight_times_the_gap_to_the_observed_return(
        name: str) -> None:
    """``algo.return_penalty``: loss = TD + weight * mean((Q_tot - G)^2), G the sampled
    team return; off, the loss is the TD loss alone and no return is sampled."""
    weight = 0.25
    algo = _build(name, **{"algo.return_penalty": str(weight)})
    assert isinstance(algo, QLearning)
    tracker = _tracker(algo)
    while algo.replay.num_transitions < 32:
        algo.collect(tracker)
    assert algo.algo.gamma == 0.95 and algo.return_horizon() == 90  # 0.95^90 < 1% < 0.95^89
    sample = algo.replay.sample(16, 1, algo.algo.gamma, return_horizon=algo.return_horizon())
    assert sample.team_return is not None
    sample = sample._replace(team_return=torch.linspace(-2.0, 3.0, 16))
    terms = algo.losses(sample)
    torch.testing.assert_close(terms["loss"], terms["td_loss"] + weight * terms["return_penalty"])
    if name == "vdn":  # Q_tot is the sum of the agents' Q of the actions taken
        group = sample.groups["agent"]
        q = algo.q["agent"](algo.normalize_obs("agent", group.obs))
        q_tot = torch.where(group.alive, q.gather(-1, group.action.unsqueeze(-1)).squeeze(-1),
                            0.0).sum(-1)
        torch.testing.assert_close(terms["return_penalty"],
                                   ((q_tot - sample.team_return) ** 2).mean())
    # The penalty's gradient moves Q_tot towards G: one step on it alone shrinks the gap.
    algo.optimizer.zero_grad()
    terms["return_penalty"].backward()
    for optimizer in algo.optimizer.optimizers:
        optimizer.step()
    assert algo.losses(sample)["return_penalty"] < terms["return_penalty"]
    assert "return_penalty" in algo.update(0.0)
    plain = _build(name)
    assert plain.return_horizon() is None
    plain_terms = plain.losses(sample)
    assert "return_penalty" not in plain_terms
    torch.testing.assert_close(plain_terms["loss"], plain_terms["td_loss"])


@pytest.mark.parametrize(("overrides", "message"), [
    ({"algo.name": "iql", "algo.return_penalty": "0.1"}, r"algo\.name=iql has none; use "),
    ({"algo.name": "ippo", "algo.return_penalty": "0.1"}, r"algo\.name=ippo has none"),
    ({"algo.name": "qmix", "algo.return_penalty": "0.1", "groups.rnn": "gru"},
     r"not on the sequences groups\.rnn=gru"),
    ({"algo.name": "qmix", "algo.return_penalty": "-1"}, r"algo\.return_penalty: expected"),
])
def test_return_penalty_is_refused_where_it_has_no_team_value(overrides: dict[str, str],
                                                               message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load(overrides=overrides)
