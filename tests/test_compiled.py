"""The compiled path (``train.compile``): where it runs, and that it computes what the
eager path computes.

Compiling a graph takes tens of seconds on a CPU, so the graphs here are few and small
(4 env copies, short rollouts); inductor caches them on disk between runs.
"""

from __future__ import annotations

import copy

import pytest
import torch
import yaml

from marl.algos.compiled import AUTO_MIN_ENV_STEPS, AUTO_MIN_ENV_STEPS_OFF_POLICY, compile_plan
from marl.build import build_env, make_learner
from marl.config import Config, ConfigError, apply, parse_overrides
from marl.logging import EpisodeTracker
from marl.trainer import train

TASK = "torch/simple_spread_v3"


def _config(*overrides: str) -> Config:
    base = [f"env.task={TASK}", "env.num_envs=4", "algo.num_steps=30", "train.compile=true",
            "algo.update_epochs=1", "algo.num_minibatches=2"]
    return apply(Config(), parse_overrides([*base, *overrides]))


def _offpolicy(*overrides: str) -> Config:
    """QMIX (unless overridden) at small sizes, compiled."""
    base = [f"env.task={TASK}", "env.num_envs=4", "algo.name=qmix", "algo.num_steps=1",
            "algo.batch_size=32", "algo.buffer_size=400", "algo.n_step=3",
            "train.compile=true"]
    return apply(Config(), parse_overrides([*base, *overrides]))


def _learner(config: Config):  # type: ignore[no-untyped-def]
    device = torch.device("cpu")
    env = build_env(config, device)
    return env, make_learner(env, config, device)


def _tracker(env) -> EpisodeTracker:  # type: ignore[no-untyped-def]
    return EpisodeTracker({n: s.num_agents for n, s in env.groups.items()}, env.num_envs,
                          torch.device("cpu"))


def test_plan_says_where_the_compiled_path_runs() -> None:
    env, ppo = _learner(_config())
    assert compile_plan(ppo.config, env) is None and ppo.compiled_rollout is not None
    off = _config("train.compile=false")
    assert compile_plan(off, env) == "train.compile=false"
    short = _config("train.compile=auto", f"train.total_env_steps={AUTO_MIN_ENV_STEPS - 1}")
    assert "auto" in (compile_plan(short, env) or "")
    long = _config("train.compile=auto", f"train.total_env_steps={AUTO_MIN_ENV_STEPS}")
    assert compile_plan(long, env) is None
    for steps, compiles in ((AUTO_MIN_ENV_STEPS_OFF_POLICY - 1, False),
                            (AUTO_MIN_ENV_STEPS_OFF_POLICY, True)):
        vdn_auto = _offpolicy("algo.name=vdn", "train.compile=auto",
                              f"train.total_env_steps={steps}")
        assert (compile_plan(vdn_auto, env) is None) is compiles
    gru = _config("groups.rnn=gru", "groups.hidden=[32]")
    _, ppo_gru = _learner(gru)
    assert "recurrent" in (ppo_gru.eager_reason or "") and ppo_gru.compiled_rollout is None
    fork = _config("groups.sharing=independent", "groups.backend=fork")
    assert "TorchScript" in (compile_plan(fork, env) or "")
    toy = _config("env.task=toy/coop_match")
    _, toy_ppo = _learner(toy)
    assert "torch-vectorised" in (toy_ppo.eager_reason or "")
    _, vdn = _learner(_offpolicy("algo.name=vdn"))
    assert vdn.eager_reason is None and vdn.compiled_collect is not None
    _, qmix_gru = _learner(_offpolicy("groups.rnn=gru", "algo.buffer_size=2000"))
    assert "recurrent" in (qmix_gru.eager_reason or "") and qmix_gru.compiled_collect is None
    _, matd3 = _learner(_offpolicy("algo.name=matd3", "env.kwargs.continuous_actions=true"))
    assert matd3.eager_reason == "algo.name=matd3 has no compiled path"
    assert matd3.compiled_collect is None


@pytest.mark.parametrize("value", ["maybe", "2", "yes please"])
def test_bad_compile_values_are_refused(value: str) -> None:
    with pytest.raises(ConfigError, match="train.compile: expected true, false or 'auto'"):
        _config(f"train.compile={value}")


def test_compiled_rollout_stores_the_envs_own_transitions() -> None:
    """Replaying the stored actions through an eager copy of the env, from the same seed,
    gives the stored observations, final observations and rewards; the stored log-probs
    are the policy's at the stored observations; the tracker's returns are the stored
    rewards summed per episode."""
    config = _config("algo.obs_norm=false", "algo.reward_norm=none")
    env, ppo = _learner(config)
    tracker = _tracker(env)
    ppo.collect(tracker)
    store = ppo.storage["agent"]
    replay = build_env(config, torch.device("cpu"))
    current = replay.reset(seed=config.seed)
    returns = torch.zeros(env.num_envs)
    episodes = []
    for t in range(config.algo.num_steps):
        torch.testing.assert_close(store.obs[t], current.groups["agent"].obs)
        step = replay.step({"agent": store.action[t]})
        group = step.groups["agent"]
        torch.testing.assert_close(store.reward[t], group.reward)
        torch.testing.assert_close(store.final_obs[t], group.final_obs)
        assert torch.equal(store.truncated[t], group.truncated)
        assert not store.terminated[t].any() and store.alive[t].all()
        returns += group.reward.mean(-1)
        if bool(step.env_done.all()):
            episodes.append(returns.mean().item())
            returns = torch.zeros(env.num_envs)
        current = current._replace(groups={"agent": group.next})
    with torch.no_grad():
        dist = ppo.groups["agent"].distribution(store.obs)
        torch.testing.assert_close(dist.log_prob(store.action), store.log_prob)
    stats = tracker.pop()
    assert stats["episodes"] == env.num_envs * len(episodes)
    assert stats["episode_return"] == pytest.approx(sum(episodes) / len(episodes), rel=1e-5)


def test_compiled_steps_and_estimates_update_every_statistic() -> None:
    """The rollout graph folds every alive sample into the observation and reward
    statistics, and the estimates graph moves the value statistics as eager code does
    (var and count too, not only the mean)."""
    env, ppo = _learner(_config("algo.reward_norm=running"))
    ppo.collect(_tracker(env))
    group = ppo.groups["agent"]
    samples = 30 * 4 * 3  # steps x copies x agents, all alive on this task
    assert group.obs_norm is not None and group.value_norm is not None
    assert group.obs_norm.count.min().item() == pytest.approx(samples, abs=1e-3)
    reward_stats = ppo.reward_norm["agent"].stats
    assert reward_stats.count.item() == pytest.approx(samples, abs=1e-3)
    assert reward_stats.var.item() != pytest.approx(1.0)
    saved = {k: v.clone() for k, v in ppo.groups.state_dict().items()}
    ppo._flat_batches()
    eager = {k: v.clone() for k, v in ppo.groups.state_dict().items()}
    ppo.groups.load_state_dict(saved)
    ppo._batches()
    assert eager["agent.value_norm.count"].item() == pytest.approx(samples, abs=1e-3)
    for key, value in ppo.groups.state_dict().items():
        torch.testing.assert_close(value, eager[key], msg=key)


@pytest.mark.parametrize("options", [(), ("algo.name=mappo",),
                                     ("algo.name=mappo", "algo.critic_input=obs_state"),
                                     ("groups.activation=relu", "algo.clip_coef=0.1"),
                                     ("groups.sharing=independent",),
                                     ("env.kwargs.continuous_actions=true",)])
def test_compiled_and_eager_losses_agree_on_the_same_batch(options: tuple[str, ...]) -> None:
    """The compiled minibatch loss and its gradients equal the eager ones on one batch
    to 1e-5 (relative): IPPO, MAPPO (whose critic reads the global state, alone or after
    the agent's own observation), a learner of
    the same shapes with other constants and activations, compiled in the same process
    (it must get a graph of its own), independent ``batched`` networks, and Gaussian
    policies (continuous actions)."""
    config = _config(*options)
    env, ppo = _learner(config)
    ppo.collect(_tracker(env))
    saved = {k: v.clone() for k, v in ppo.groups.state_dict().items()}
    batches = ppo._flat_batches()  # updates the value statistics: from the same state twice
    ppo.groups.load_state_dict(saved)
    compiled_batches = ppo._batches()
    for name in batches:
        for eager, compiled in zip(batches[name], compiled_batches[name], strict=True):
            if isinstance(eager, torch.Tensor):
                torch.testing.assert_close(compiled, eager, rtol=1e-5, atol=1e-5)
    index = torch.randperm(next(iter(batches.values())).obs.shape[0])[:50]
    coef = torch.tensor(0.01)
    params = [p for p in ppo.groups.parameters() if p.requires_grad]
    assert ppo.compiled_rollout is not None  # the compiled path, loss included
    total, rows = ppo._loss(batches, index, coef)
    compiled_grads = torch.autograd.grad(total, params)
    from marl.algos.ppo import LOSS_TERMS, ppo_loss
    from marl.algos.rollout import take

    algo = config.algo
    terms = ppo_loss(ppo.groups["agent"], take(batches["agent"], index), algo.clip_coef, 0.01,
                     algo.vf_coef, algo.clip_vloss, algo.norm_adv)
    eager_grads = torch.autograd.grad(terms["loss"], params)
    torch.testing.assert_close(total, terms["loss"], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(rows[0], torch.stack([terms[k].detach() for k in LOSS_TERMS]),
                               rtol=1e-5, atol=1e-6)
    for got, want in zip(compiled_grads, eager_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)


def test_compiled_chunks_make_the_eager_whole_minibatchs_update() -> None:
    """algo.chunk_rows on the compiled path: the chunks' graph (the whole minibatch's
    statistics as inputs) accumulates the gradients of the eager whole minibatch."""
    env, ppo = _learner(_config("algo.chunk_rows=20", "algo.update_epochs=2"))
    ppo.collect(_tracker(env))
    groups = {k: v.clone() for k, v in ppo.groups.state_dict().items()}
    optimizers = [copy.deepcopy(o.state_dict()) for o in ppo.optimizer.optimizers]
    torch.manual_seed(1)
    chunked = ppo.update(0.0)
    chunked_weights = {k: v.clone() for k, v in ppo.groups.state_dict().items()}
    ppo.groups.load_state_dict(groups)
    for optimizer, state in zip(ppo.optimizer.optimizers, optimizers, strict=True):
        optimizer.load_state_dict(state)
    ppo.chunk_count = lambda batches, samples: 1  # type: ignore[method-assign]
    ppo._loss, ppo._batches = ppo.summed_loss, ppo._flat_batches  # eager, whole
    ppo.compiled_update = None
    torch.manual_seed(1)
    whole = ppo.update(0.0)
    for name, want in ppo.groups.state_dict().items():
        torch.testing.assert_close(chunked_weights[name], want, rtol=1e-4, atol=1e-5, msg=name)
    for key, value in whole.items():
        assert chunked[key] == pytest.approx(value, rel=1e-4, abs=1e-5), key


def _snapshot(ppo):  # type: ignore[no-untyped-def]
    return ({k: v.clone() for k, v in ppo.groups.state_dict().items()},
            [copy.deepcopy(o.state_dict()) for o in ppo.optimizer.optimizers])


def _restore(ppo, snapshot) -> None:  # type: ignore[no-untyped-def]
    groups, optimizers = snapshot
    ppo.groups.load_state_dict(groups)
    for optimizer, state in zip(ppo.optimizer.optimizers, optimizers, strict=True):
        optimizer.load_state_dict(state)


def _adam_state_of(optimizer, params) -> list[torch.Tensor]:  # type: ignore[no-untyped-def]
    state = optimizer.optimizers[0].state
    return [state[p][key] for p in params for key in ("step", "exp_avg", "exp_avg_sq")]


def _adam_state(ppo) -> list[torch.Tensor]:  # type: ignore[no-untyped-def]
    return _adam_state_of(ppo.optimizer, ppo.compiled_update.params)


@pytest.mark.parametrize("options", [(), ("algo.name=mappo", "algo.critic_input=obs_state"),
                                     ("groups.sharing=independent", "optim.clip_mode=group"),
                                     ("env.kwargs.continuous_actions=true",
                                      "optim.max_grad_norm=null", "optim.impl=loop"),
                                     ("optim.max_grad_norm=0.01",),
                                     ("env.task=torch/simple_speaker_listener_v4",
                                      "optim.clip_mode=group")])
def test_one_graph_update_is_the_eager_update(options: tuple[str, ...]) -> None:
    """The minibatch update as one graph (loss, ``torch.func.grad``, clipping, Adam)
    moves the weights and Adam's state as the eager loss, ``backward()``,
    ``clip_grad_norm_`` and ``torch.optim.Adam`` do, over two updates of three minibatches
    (two epochs each) with the learning rate annealed, and logs the same norms and terms:
    IPPO, MAPPO reading the global state, ``batched`` networks with one clipping norm per
    group, Gaussian policies without clipping on Adam's per-tensor kernels, a clipping
    norm that every minibatch hits, and two groups (speaker and listener) clipped apart."""
    env, ppo = _learner(_config("algo.update_epochs=2", "algo.num_minibatches=3", *options))
    ppo.collect(_tracker(env))
    start = _snapshot(ppo)
    compiled = []
    for progress in (0.0, 0.5):
        torch.manual_seed(int(progress * 10) + 1)
        compiled.append(ppo.update(progress))
        assert ppo.compiled_update is not None and ppo.compiled_update.ready
    weights = {k: v.clone() for k, v in ppo.groups.state_dict().items()}
    adam = [t.clone() for t in _adam_state(ppo)]
    one_graph = ppo.compiled_update
    _restore(ppo, start)
    ppo.compiled_update = None
    ppo._loss, ppo._batches = ppo.summed_loss, ppo._flat_batches  # eager throughout
    for progress, got in zip((0.0, 0.5), compiled, strict=True):
        torch.manual_seed(int(progress * 10) + 1)
        want = ppo.update(progress)
        assert got.keys() == want.keys()
        for key, value in want.items():
            assert got[key] == pytest.approx(value, rel=1e-4, abs=1e-6), key
    for name, want in ppo.groups.state_dict().items():
        torch.testing.assert_close(weights[name], want, rtol=1e-4, atol=1e-6, msg=name)
    ppo.compiled_update = one_graph
    for got, want in zip(adam, _adam_state(ppo), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-7)
    assert float(adam[0]) == 2 * 2 * 3  # Adam's step count: every minibatch stepped


def test_one_graph_update_gives_way_to_a_parameter_without_a_gradient() -> None:
    """A parameter that gets no gradient (Adam skips it) keeps the run on the ordinary
    path, which steps it as eager PyTorch does: not at all."""
    from marl.algos.compiled import CompiledUpdate

    env, ppo = _learner(_config("algo.num_minibatches=3"))
    unused = torch.nn.Parameter(torch.ones(3))
    ppo.groups["agent"].register_parameter("unused", unused)
    ppo.optimizer.optimizers[0].add_param_group({"params": [unused]})
    ppo.compiled_update = CompiledUpdate(ppo.optimizer, ppo.summed_loss)
    ppo.collect(_tracker(env))
    ppo.update(0.0)
    assert ppo.compiled_update is None
    torch.testing.assert_close(unused.detach(), torch.ones(3))


def test_run_config_records_the_path_and_the_compile_time(tmp_path) -> None:  # type: ignore[no-untyped-def]
    overrides = [f"env.task={TASK}", "env.num_envs=4", "algo.num_steps=30",
                 "algo.update_epochs=1", "algo.num_minibatches=2", "train.total_env_steps=240",
                 "train.log_every=120", "train.eval_every=0", "run.tensorboard=false"]
    for setting, expected in (("true", "train.compile: compiled"),
                              ("false", "train.compile: eager (train.compile=false)")):
        run_dir = tmp_path / setting
        config = apply(Config(), parse_overrides([*overrides, f"train.compile={setting}",
                                                  f"run.dir={run_dir}"]))
        with open(tmp_path / f"{setting}.log", "w") as stream:
            result = train(config, stream=stream)
        text = (run_dir / "config.yaml").read_text()
        assert expected in text
        assert yaml.safe_load(text)["train"]["compile"] is (setting == "true")
        assert result.env_steps == 240
        lines = (run_dir / "metrics.jsonl").read_text().splitlines()
        assert ("compile_time" in lines[-1]) is (setting == "true")


def test_compiled_collection_fills_replay_as_the_eager_one_does() -> None:
    """Greedy (epsilon 0), from one seed and one set of weights, the compiled and the
    eager collection write the same replay buffer (observations, actions, rewards, flags,
    final observations, global states, team rewards and episode ends) over two episodes
    and a bit, update the observation and state statistics alike and report the same
    episodes; with epsilon 1 the compiled actions are uniform over the actions."""
    buffers, stats, trackers = [], [], []
    for setting in ("true", "false"):
        config = _offpolicy("algo.eps_start=0", "algo.eps_end=0", "algo.num_steps=60",
                            f"train.compile={setting}")
        torch.manual_seed(3)
        env, learner = _learner(config)
        assert (learner.compiled_collect is not None) is (setting == "true")
        tracker = _tracker(env)
        assert learner.collect(tracker) == 240 and learner.env_steps == 240
        buffers.append(learner.replay._fields())
        stats.append({**learner.obs_norm.state_dict(), **learner.state_norm.state_dict()})
        trackers.append(tracker.pop())
    compiled_fields, eager_fields = buffers
    for key, eager in eager_fields.items():
        torch.testing.assert_close(compiled_fields[key], eager, rtol=1e-5, atol=1e-5, msg=key)
    assert bool(eager_fields["team_truncated"][24].all())
    assert not bool(eager_fields["team_truncated"][:24].any())
    for key, eager in stats[1].items():
        torch.testing.assert_close(stats[0][key], eager, rtol=1e-5, atol=1e-5, msg=key)
    assert trackers[0]["episodes"] == trackers[1]["episodes"] == 8
    assert trackers[0]["episode_return"] == pytest.approx(trackers[1]["episode_return"],
                                                          rel=1e-5)
    env, learner = _learner(_offpolicy("algo.eps_start=1", "algo.eps_end=1",
                                       "algo.num_steps=100"))
    assert learner.compiled_collect is not None
    learner.collect(_tracker(env))
    counts = torch.bincount(learner.replay.storage["agent"].action[:100].flatten(),
                            minlength=5)
    assert counts.min() > 0.15 * counts.sum()  # 1,200 uniform draws over 5 actions


@pytest.mark.parametrize("options", [("algo.name=qmix", "algo.return_penalty=0.01"),
                                     ("algo.name=vdn", "algo.obs_norm=false"),
                                     ("algo.name=iql", "groups.sharing=independent")])
def test_compiled_and_eager_q_losses_agree_on_the_same_draw(options: tuple[str, ...]) -> None:
    """On the same drawn transitions, the compiled sampled loss (sampling, n-step targets,
    Q networks, mixer, return penalty) and its gradients equal the eager ones to 1e-5:
    QMIX with the return penalty, VDN without observation normalisation, IQL with
    independent ``batched`` networks; the write position enters as a tensor, so another
    position reuses the graph."""
    config = _offpolicy("algo.num_steps=40", *options)
    env, learner = _learner(config)
    learner.collect(_tracker(env))  # 40 steps of 4 copies in a 100-slot ring
    params = [p for group in learner.optimizer.params.values() for p in group]
    for _ in range(2):
        draw = learner.replay.draw(32)
        pos = learner.replay.pos
        compiled = learner._drawn(draw, torch.tensor(pos))
        eager = learner.drawn_losses(draw, pos)
        assert set(compiled) == set(eager)
        for key, value in eager.items():
            torch.testing.assert_close(compiled[key], value, rtol=1e-5, atol=1e-6, msg=key)
        compiled_grads = torch.autograd.grad(compiled["loss"], params, allow_unused=True)
        eager_grads = torch.autograd.grad(eager["loss"], params, allow_unused=True)
        for got, want in zip(compiled_grads, eager_grads, strict=True):
            assert (got is None) is (want is None)
            if got is not None:
                torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)
        learner.collect(_tracker(env))  # a new write position


@pytest.mark.parametrize("options", [("algo.name=qmix", "algo.return_penalty=0.01"),
                                     ("algo.name=vdn", "optim.clip_mode=group"),
                                     ("algo.name=iql", "groups.sharing=independent",
                                      "algo.gradient_steps=2", "algo.target_update=hard",
                                      "algo.target_update_interval=2")])
def test_one_graph_q_update_is_the_eager_update(options: tuple[str, ...]) -> None:
    """The Q learners' update as one graph (the draw's loss, ``torch.func.grad``,
    clipping, Adam) moves the online and target networks and Adam's state as the eager
    loss, ``backward()``, ``clip_grad_norm_`` and Adam do, over three updates on the same
    draws with the learning rate annealed, and logs the same terms: QMIX with the return
    penalty (its mixer trained in the same step), VDN clipped per group, IQL with
    independent networks, two gradient steps an update and hard target copies."""
    env, learner = _learner(_offpolicy("algo.num_steps=40", "algo.warmup_steps=100",
                                       *options))
    learner.collect(_tracker(env))
    start = ({k: copy.deepcopy(m.state_dict()) for k, m in learner.modules().items()},
             copy.deepcopy(learner.optimizer.optimizers[0].state_dict()), learner.num_updates)
    compiled = []
    for progress in (0.0, 0.3, 0.6):
        torch.manual_seed(int(progress * 10) + 1)
        compiled.append(learner.update(progress))
        assert learner.compiled_update is not None and learner.compiled_update.ready
    weights = {k: copy.deepcopy(m.state_dict()) for k, m in learner.modules().items()}
    one_graph = learner.compiled_update
    adam = [t.clone() for t in _adam_state_of(learner.optimizer, one_graph.params)]
    modules, optimizer, updates = start
    for key, module in learner.modules().items():
        module.load_state_dict(modules[key])
    learner.optimizer.optimizers[0].load_state_dict(optimizer)
    learner.num_updates = updates
    learner.compiled_update, learner._drawn = None, learner.drawn_losses  # eager
    for progress, got in zip((0.0, 0.3, 0.6), compiled, strict=True):
        torch.manual_seed(int(progress * 10) + 1)
        want = learner.update(progress)
        assert got.keys() == want.keys()
        for key, value in want.items():
            assert got[key] == pytest.approx(value, rel=1e-4, abs=1e-6), key
    for key, module in learner.modules().items():
        for name, want in module.state_dict().items():
            torch.testing.assert_close(weights[key][name], want, rtol=1e-4, atol=1e-6,
                                       msg=f"{key}.{name}")
    for got, want in zip(adam, _adam_state_of(learner.optimizer, one_graph.params),
                         strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-7)
