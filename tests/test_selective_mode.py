"""groups.sharing=selective: K networks gathered from any stacked group network, the
clustering pipeline, training runs end to end (roles recovered, resume, eval, every
algorithm), config errors, optimiser state, and the torch/hidden_colours_v0 task."""

from __future__ import annotations

import copy
import functools
import io
import json
import math
import shutil
from pathlib import Path
from typing import Any

import marl_envs
import pytest
import torch
from marl_envs.tasks.hidden_roles import hidden_role_assignment
from marl_envs.torch_mpe.scenarios import hidden_types
from marl_envs.torch_mpe.tasks import hidden_colours_v0
from torch import nn

from marl import checkpoint
from marl.build import build_env, load_modules, make_learner
from marl.config import ConfigError, OptimConfig, load
from marl.evaluate import evaluate
from marl.nets.composed import make_composed_group_net
from marl.optim import CommonOptimizer
from marl.selective import (
    Transitions,
    choose_k,
    collect_random_transitions,
    fit_identity_model,
    runtime,
)
from marl.selective.cluster import GAIN_THRESHOLD
from marl.selective.runtime import adopt_checkpoint_index
from marl.selective.share import group_index, iter_stacks, set_index, share_networks
from marl.trainer import train

torch.set_num_threads(1)

A, OUT, K = 6, 3, 3
INDEX = torch.tensor([0, 1, 2, 1, 0, 2])
"""A K = 3 assignment of the A = 6 agents: network 0 {0, 4}, 1 {1, 3}, 2 {2, 5}."""

BUILDS: dict[str, tuple[tuple[int, ...], dict[str, Any]]] = {
    "mlp": ((10,), {}),
    "layer_norm_residual": ((10,), {"layer_norm": True, "residual": True}),
    "cnn": ((7, 7, 3), {}),
    "entity": ((6, 7), {}),
    "gru": ((10,), {"rnn": "gru"}),
    "gru_entity": ((6, 7), {"rnn": "gru"}),
}
RNN_HIDDEN = 8


def _recurrent(name: str) -> bool:
    return BUILDS[name][1].get("rnn") == "gru"


def _build(name: str, sharing: str = "selective", agent_id: bool = True) -> nn.Module:
    shape, options = BUILDS[name]
    torch.manual_seed(0)
    return make_composed_group_net(sharing, shape, OUT, A, hidden=(16, 16),
                                   rnn_hidden=RNN_HIDDEN, agent_id=agent_id, group="g",
                                   **options)


def _inputs(name: str, seed: int = 1) -> tuple[torch.Tensor, ...]:
    """Feed-forward: ``(x [B, A, D],)``; recurrent: ``(obs [T, B, A, D], hidden, first)``
    with a non-zero start state (so the recurrent weights get gradients from step 0)."""
    generator = torch.Generator().manual_seed(seed)
    features = math.prod(BUILDS[name][0])
    if not _recurrent(name):
        return (torch.randn(5, A, features, generator=generator),)
    obs = torch.randn(3, 4, A, features, generator=generator)
    hidden = torch.randn(4, A, RNN_HIDDEN, generator=generator)
    first = torch.zeros(3, 4, A, dtype=torch.bool)
    return obs, hidden, first


def _run(net: nn.Module, inputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """The network's per-agent outputs ``[..., A, O]``."""
    if len(inputs) == 1:
        return net(inputs[0])
    out, _ = net(*inputs)
    return out


def _moved(inputs: tuple[torch.Tensor, ...], agent: int) -> tuple[torch.Tensor, ...]:
    """``inputs`` with agent ``agent``'s observations shifted by 1 (every step)."""
    x = inputs[0].clone()
    x[..., agent, :] += 1.0
    return (x, *inputs[1:])


def _perturb(net: nn.Module, seed: int = 2) -> None:
    """Move every stack off its initial values (so copies and blocks can be told apart)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for stack in iter_stacks(net):
            stack.parameter.add_(0.1 * torch.randn(stack.parameter.shape, generator=generator))


def _blocks(tensor: torch.Tensor, block: int) -> torch.Tensor:
    """``[K * s, ...] -> [K, s, ...]``."""
    return tensor.reshape(tensor.shape[0] // block, block, *tensor.shape[1:])


def _partition(labels: Any) -> set[frozenset[int]]:
    """The agents of each network, as a set of sets (labels do not matter)."""
    networks: dict[int, set[int]] = {}
    for agent, label in enumerate(torch.as_tensor(labels).tolist()):
        networks.setdefault(int(label), set()).add(agent)
    return {frozenset(agents) for agents in networks.values()}


# --- the K-network form of every network -------------------------------------------------


@pytest.mark.parametrize("name", list(BUILDS))
def test_one_agents_loss_moves_only_its_networks_block(name: str) -> None:
    net = _build(name)
    set_index([net], "g", INDEX)
    stacks = list(iter_stacks(net, "g"))
    assert stacks, "the selective network holds no stacks"
    for stack in stacks:
        assert stack.parameter.shape[0] == K * stack.gather.block
        assert stack.gather.index.tolist() == INDEX.tolist()
    inputs = _inputs(name)
    for agent in range(A):
        net.zero_grad(set_to_none=True)
        _run(net, inputs)[..., agent, :].sum().backward()
        own = int(INDEX[agent])
        others = [network for network in range(K) if network != own]
        for stack in stacks:
            where = f"agent {agent}, {stack.prefix}.{stack.name}"
            assert stack.parameter.grad is not None, where
            blocks = _blocks(stack.parameter.grad, stack.gather.block)
            assert blocks[own].abs().sum() > 0, where
            assert blocks[others].abs().max() == 0, where


@pytest.mark.parametrize("name", list(BUILDS))
def test_networks_start_as_copies_of_the_warm_up_network(name: str) -> None:
    net = _build(name)
    assert group_index(net, "g").tolist() == [0] * A  # built as one network
    _perturb(net)  # a "trained" warm-up network, not the initial weights
    inputs = _inputs(name)
    with torch.no_grad():
        before = _run(net, inputs)
        set_index([net], "g", INDEX)
        after = _run(net, inputs)
    torch.testing.assert_close(after, before, rtol=0, atol=1e-6)
    # The K networks are copies, not one tensor: moving network 1 moves only its agents.
    with torch.no_grad():
        for stack in iter_stacks(net, "g"):
            _blocks(stack.parameter, stack.gather.block)[1] += 0.5
        moved = _run(net, inputs)
    changed = (moved - after).abs().flatten(0, -3).sum(dim=(0, 2))
    assert torch.all(changed[INDEX == 1] > 0)
    assert torch.all(changed[INDEX != 1] == 0)


@pytest.mark.parametrize("name", list(BUILDS))
def test_perturbing_one_agents_input_changes_only_its_output(name: str) -> None:
    net = _build(name)
    set_index([net], "g", INDEX)
    _perturb(net)
    inputs = _inputs(name)
    with torch.no_grad():
        base = _run(net, inputs)
        for agent in range(A):
            changed = (_run(net, _moved(inputs, agent)) - base).abs().flatten(0, -3).sum(
                dim=(0, 2))
            assert changed[agent] > 0
            assert changed[[other for other in range(A) if other != agent]].max() == 0


# --- K = 1 is a shared network, K = A independent networks -------------------------------


def test_one_network_computes_and_learns_as_the_shared_network() -> None:
    selective = _build("mlp")  # K = 1: the warm-up form
    shared = _build("mlp", sharing="shared")
    linears = [layer for layer in shared.mlp if isinstance(layer, nn.Linear)]
    stacks = {stack.name: stack for stack in iter_stacks(selective, "g")}
    assert len(stacks) == 2 * len(linears)
    with torch.no_grad():
        for layer_index, layer in enumerate(linears):  # [1, in, out] and [1, 1, out]
            stacks[f"weight_{layer_index}"].parameter.copy_(layer.weight.T.unsqueeze(0))
            stacks[f"bias_{layer_index}"].parameter.copy_(layer.bias.view(1, 1, -1))
    x = torch.randn(7, A, 10, generator=torch.Generator().manual_seed(3))
    weights = torch.randn(7, A, OUT, generator=torch.Generator().manual_seed(4))
    out_selective, out_shared = selective(x), shared(x)
    torch.testing.assert_close(out_selective, out_shared, rtol=0, atol=1e-6)
    (out_selective * weights).sum().backward()
    (out_shared * weights).sum().backward()
    for layer_index, layer in enumerate(linears):
        weight, bias = stacks[f"weight_{layer_index}"], stacks[f"bias_{layer_index}"]
        # One network: every agent's gradient lands in the one block, summed as in the
        # shared network's weight.
        assert weight.parameter.shape[0] == 1 and bias.parameter.shape[0] == 1
        torch.testing.assert_close(weight.parameter.grad[0], layer.weight.grad.T)
        torch.testing.assert_close(bias.parameter.grad[0, 0], layer.bias.grad)


@pytest.mark.parametrize("name", ["mlp", "layer_norm_residual", "cnn", "entity", "gru"])
@pytest.mark.parametrize("index", [list(range(A)), [3, 1, 0, 5, 2, 4]])
def test_one_network_per_agent_is_the_independent_network(name: str, index: list[int]) -> None:
    independent = _build(name, sharing="independent", agent_id=False)
    selective = share_networks(copy.deepcopy(independent), A, "g", index=index)
    stacks = list(iter_stacks(selective, "g"))
    assert stacks and all(stack.parameter.shape[0] == A * stack.gather.block
                          for stack in stacks)
    inputs = _inputs(name)
    out_selective, out_independent = _run(selective, inputs), _run(independent, inputs)
    torch.testing.assert_close(out_selective, out_independent, rtol=0, atol=1e-6)
    weights = torch.randn(out_independent.shape, generator=torch.Generator().manual_seed(5))
    (out_selective * weights).sum().backward()
    (out_independent * weights).sum().backward()
    originals = dict(independent.named_parameters())
    order = torch.as_tensor(index)
    for stack in stacks:
        dotted = f"{stack.prefix}.{stack.name}" if stack.prefix else stack.name
        expected = _blocks(originals[dotted].grad, stack.gather.block)
        got = _blocks(stack.parameter.grad, stack.gather.block)[order]  # network of each agent
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


# --- clustering is blind to the agents' order ----------------------------------------------


@functools.cache
def _roles_transitions(role_seed: int) -> Transitions:
    env = marl_envs.make("toy/hidden_roles", num_envs=8,
                         kwargs={"num_agents": 6, "num_roles": 3, "role_seed": role_seed})
    transitions = collect_random_transitions(env, "agent", steps=40, seed=role_seed)
    env.close()
    return transitions


def _auto_assignment(transitions: Transitions) -> torch.Tensor:
    # 500 optimiser steps rather than the default's 3,000 keep the three fits below fast;
    # the roles stay clearly apart either way.
    fit = fit_identity_model(transitions, 3, seed=0, steps=500)
    return choose_k(fit.mean, "auto", scale=fit.posterior_std, seed=0, gain=fit.gain).index


def test_permuting_the_agents_gives_the_same_partition() -> None:
    transitions = _roles_transitions(3)
    base = _partition(_auto_assignment(transitions))
    assert base == _partition(hidden_role_assignment(6, 3, 3))
    for order in (torch.tensor([5, 4, 3, 2, 1, 0]), torch.tensor([2, 5, 0, 4, 1, 3])):
        permuted = Transitions(*(field[:, order] for field in transitions))
        found = _partition(_auto_assignment(permuted))
        # Slot j of the permuted transitions is agent order[j].
        back = {frozenset(int(order[slot]) for slot in network) for network in found}
        assert back == base, order.tolist()


@pytest.mark.parametrize(("agents", "types", "type_seed"), [(32, 4, 0), (16, 2, 5)])
def test_hidden_colours_types_are_recovered_from_random_play(agents: int, types: int,
                                                             type_seed: int) -> None:
    # The identity model's defaults (standardised targets, Z = 4, 3,000 steps) on 10k
    # random transitions: auto finds the hidden types exactly, and the held-out gain says
    # the agents differ far above the threshold.
    env = marl_envs.make("torch/hidden_colours_v0", num_envs=10,
                         kwargs={"N": agents, "K": types, "type_seed": type_seed})
    transitions = collect_random_transitions(env, "agent", steps=1000, seed=type_seed)
    fit = fit_identity_model(transitions, 5, seed=type_seed)
    clustering = choose_k(fit.mean, "auto", fit.posterior_std, seed=type_seed, gain=fit.gain)
    assert clustering.num_networks == types
    assert _partition(clustering.index) == _partition(torch.tensor(hidden_types(
        agents, types, type_seed)))
    assert fit.gain > 10 * GAIN_THRESHOLD


@pytest.mark.parametrize(("task", "kwargs"), [("torch/simple_spread_v3", {}),
                                              ("torch/hidden_colours_v0", {"N": 8, "K": 1})])
def test_alike_agents_show_no_held_out_gain(task: str, kwargs: dict[str, int]) -> None:
    env = marl_envs.make(task, num_envs=10, kwargs=kwargs)
    transitions = collect_random_transitions(env, "agent", steps=500, seed=4)
    fit = fit_identity_model(transitions, 5, seed=4, steps=1000)
    assert fit.gain < GAIN_THRESHOLD / 5
    assert choose_k(fit.mean, "auto", fit.posterior_std, seed=4, gain=fit.gain).num_networks == 1


# --- training runs ---------------------------------------------------------------------------


def _roles_overrides(run_dir: Path, **extra: Any) -> dict[str, str]:
    """Hidden roles (6 agents, 3 roles), a warm-up of one 512-step rollout, one more after."""
    base = {"env.task": "toy/hidden_roles", "groups.sharing": "selective",
            "groups.selective_warmup": "500", "train.total_env_steps": "1000",
            "env.num_envs": "8", "algo.num_steps": "64", "groups.hidden": "[16]",
            "train.eval_every": "0", "run.dir": str(run_dir), "run.tensorboard": "false",
            "train.progress": "false", "torch_threads": "1"}
    base.update({key: str(value) for key, value in extra.items()})
    return base


def _train(overrides: dict[str, str]) -> tuple[Path, str]:
    stream = io.StringIO()
    result = train(load(overrides=overrides), stream)
    return result.run_dir, stream.getvalue()


@pytest.fixture(scope="module")
def roles_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """One finished selective run on hidden roles (seed 1, role seed 0); leave it as is."""
    return _train(_roles_overrides(tmp_path_factory.mktemp("roles") / "run", seed=1))


def _sharing(run_dir: Path) -> dict[str, Any]:
    return json.loads((run_dir / "sharing.json").read_text())


def _agent_index(document: dict[str, Any], group: str = "agent") -> list[int]:
    mapping = document[group]
    return [mapping[f"agent_{i}"] for i in range(len(mapping))]


def _checkpoint_indices(run_dir: Path) -> tuple[dict[str, Any], dict[str, list[int]]]:
    state = checkpoint.load(checkpoint.latest(run_dir / "checkpoints"))
    indices = {f"{module}/{key}": value.tolist()
               for module, saved in state["modules"].items() for key, value in saved.items()
               if ".parametrizations." in key and key.endswith(".index")}
    return state, indices


@pytest.mark.parametrize(("seed", "role_seed"), [(1, 0), (2, 0), (3, 1)])
def test_training_recovers_the_hidden_roles(tmp_path: Path, request: pytest.FixtureRequest,
                                            seed: int, role_seed: int) -> None:
    if (seed, role_seed) == (1, 0):
        run_dir, output = request.getfixturevalue("roles_run")
    else:
        run_dir, output = _train(_roles_overrides(tmp_path / "run", seed=seed,
                                                  **{"env.kwargs.role_seed": role_seed}))
    document = _sharing(run_dir)
    index = _agent_index(document)
    assert _partition(index) == _partition(hidden_role_assignment(6, 3, role_seed))
    assert document["_details"]["agent"]["num_networks"] == 3  # chosen by auto
    assert (run_dir / "sharing.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "K = 3" in output and "(written to sharing.json)" in output


def test_alike_agents_get_one_network(tmp_path: Path) -> None:
    run_dir, output = _train(_roles_overrides(tmp_path / "run", **{"env.kwargs.num_roles": 1}))
    document = _sharing(run_dir)
    assert _agent_index(document) == [0] * 6
    assert document["_details"]["agent"]["num_networks"] == 1
    assert "K = 1" in output
    _, indices = _checkpoint_indices(run_dir)
    assert indices and all(value == [0] * 6 for value in indices.values())


def test_checkpoint_holds_the_k_networks(roles_run: tuple[Path, str]) -> None:
    run_dir, _ = roles_run
    index = _agent_index(_sharing(run_dir))
    state, indices = _checkpoint_indices(run_dir)
    for network in ("actor", "critic"):
        assert any(key.startswith(f"groups/agent.{network}.") for key in indices), network
    assert all(value == index for value in indices.values())
    for key in indices:
        module, name = key.split("/", 1)
        original = state["modules"][module][name.removesuffix(".0.index") + ".original"]
        assert original.shape[0] == 3  # linear stacks: one row per network


def test_resume_keeps_the_assignment_and_continues(tmp_path: Path,
                                                   roles_run: tuple[Path, str]) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(roles_run[0], run_dir)
    sharing = run_dir / "sharing.json"
    text, mtime = sharing.read_bytes(), sharing.stat().st_mtime_ns
    finished = checkpoint.load(checkpoint.latest(run_dir / "checkpoints"))["env_steps"]
    _, output = _train(_roles_overrides(run_dir, seed=1, **{"run.resume": "true",
                                                            "train.total_env_steps": "1500"}))
    assert "kept from sharing.json" in output and "written to" not in output
    assert sharing.read_bytes() == text and sharing.stat().st_mtime_ns == mtime
    state, indices = _checkpoint_indices(run_dir)
    assert state["env_steps"] >= 1500 > finished
    assert indices and all(value == _agent_index(_sharing(run_dir))
                           for value in indices.values())


def test_eval_and_a_fresh_learner_load_the_k_networks(roles_run: tuple[Path, str]) -> None:
    run_dir, _ = roles_run
    report = evaluate(run_dir, episodes=4)
    assert report["episodes"] == 4 and math.isfinite(report["episode_return_mean"])
    config = load(run_dir / "config.yaml")
    device = torch.device("cpu")
    env = build_env(config, device)
    try:
        learner = make_learner(env, config, device)
        modules = learner.modules()
        assert group_index(modules["groups"], "agent").tolist() == [0] * 6  # warm-up form
        path = checkpoint.latest(run_dir / "checkpoints")
        load_modules(learner, checkpoint.load(path), path)
    finally:
        env.close()
    assert group_index(modules["groups"], "agent").tolist() == _agent_index(_sharing(run_dir))
    # The optimiser steps the adopted K-network stacks, not the warm-up ones.
    stepped = {id(p) for optimizer in learner.optimizer.optimizers
               for group in optimizer.param_groups for p in group["params"]}
    assert {id(stack.parameter) for stack in iter_stacks(modules["groups"])} <= stepped


@pytest.mark.parametrize("name", ["mlp", "gru_entity"])
def test_adopt_checkpoint_index_rebuilds_k_networks_before_loading(name: str) -> None:
    trained = _build(name)
    set_index([trained], "g", INDEX)
    _perturb(trained)
    state = trained.state_dict()
    with pytest.raises(RuntimeError):  # the one-network form does not take the K stacks
        _build(name).load_state_dict(state)
    fresh = _build(name)
    swaps = adopt_checkpoint_index(fresh, state)
    assert len(swaps) == len(list(iter_stacks(fresh)))
    assert group_index(fresh, "g").tolist() == INDEX.tolist()
    fresh.load_state_dict(state)
    inputs = _inputs(name)
    with torch.no_grad():
        torch.testing.assert_close(_run(fresh, inputs), _run(trained, inputs), rtol=0, atol=0)
    assert adopt_checkpoint_index(fresh, state) == []  # already in the saved assignment


OFF_POLICY = {"algo.warmup_steps": "128", "algo.num_steps": "8", "algo.batch_size": "32",
              "algo.buffer_size": "4096", "train.total_env_steps": "512"}
ALGO_RUNS: dict[str, dict[str, str]] = {
    "ippo": {"algo.name": "ippo"},
    "mappo": {"algo.name": "mappo"},
    "iql": {"algo.name": "iql", **OFF_POLICY},
    "vdn": {"algo.name": "vdn", **OFF_POLICY},
    "qmix": {"algo.name": "qmix", **OFF_POLICY},
    "ippo_gru": {"algo.name": "ippo", "groups.rnn": "gru"},
    "qmix_gru": {"algo.name": "qmix", "groups.rnn": "gru", **OFF_POLICY},
}


@pytest.mark.parametrize("case", list(ALGO_RUNS))
def test_selective_sharing_trains_with_every_algorithm(tmp_path: Path, case: str,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    # These runs test the wiring into each learner, not the clustering (tested above with
    # the defaults): a shorter identity fit keeps them fast.
    monkeypatch.setattr(runtime, "fit_identity_model",
                        functools.partial(fit_identity_model, steps=200))
    overrides = _roles_overrides(tmp_path / "run", **{
        "env.kwargs.num_agents": 4, "env.kwargs.num_roles": 2,
        "groups.selective_warmup": 256, "groups.rnn_hidden": 16, **ALGO_RUNS[case]})
    total = int(overrides["train.total_env_steps"])
    run_dir, output = _train(overrides)
    document = _sharing(run_dir)
    index = _agent_index(document)
    # Two networks for the two roles: the swap to K stacks ran in every module (a run that
    # kept one network would pass the index checks below trivially).
    assert len(index) == 4 and document["_details"]["agent"]["num_networks"] == len(set(index))
    assert len(set(index)) == 2
    state, indices = _checkpoint_indices(run_dir)
    assert state["env_steps"] >= total
    assert indices and all(value == index for value in indices.values())
    assert "(written to sharing.json)" in output


# --- bad values ------------------------------------------------------------------------------


@pytest.mark.parametrize(("key", "value", "message"), [
    ("groups.clusters", "0", r"groups\.clusters: expected 'auto' or an integer >= 1"),
    ("groups.clusters", "-2", r"groups\.clusters: expected 'auto' or an integer >= 1"),
    ("groups.clusters", "abc", r"groups\.clusters: expected 'auto' or an integer >= 1"),
    ("groups.selective_warmup", "0", r"groups\.selective_warmup: expected .*>= 1"),
    ("groups.sharing", "selectve", r"groups\.sharing: expected one of shared, independent, "
                                   r"selective; got 'selectve'"),
])
def test_bad_selective_values_are_refused(tmp_path: Path, key: str, value: str,
                                          message: str) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        load(overrides=_roles_overrides(tmp_path / "run", **{key: value}))
    assert "\n" not in str(caught.value)
    assert not (tmp_path / "run").exists()


def test_more_clusters_than_agents_is_refused_when_training_starts(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    config = load(overrides=_roles_overrides(run_dir, **{"groups.clusters": 7}))
    assert config.groups.clusters == 7  # legal until the group's size is known
    with pytest.raises(ConfigError, match=r"groups\.clusters=7: group 'agent' has 6 agents, "
                                          r"so K must be in 1 \.\. 6") as caught:
        train(config, io.StringIO())
    assert "\n" not in str(caught.value)
    assert not run_dir.exists()


def test_a_new_network_starts_from_its_first_agents_old_network() -> None:
    net = _build("layer_norm_residual")
    set_index([net], "g", INDEX)
    _perturb(net)
    old = {stack.name: _blocks(stack.parameter.detach().clone(), stack.gather.block)
           for stack in iter_stacks(net, "g")}
    set_index([net], "g", [0, 0, 1, 2, 1, 2])  # first agents 0, 2, 3: old networks 0, 2, 1
    for stack in iter_stacks(net, "g"):
        new = _blocks(stack.parameter.detach(), stack.gather.block)
        torch.testing.assert_close(new, old[stack.name][[0, 2, 1]], rtol=0, atol=0)


# --- the optimiser follows the new stacks ----------------------------------------------------


def test_swapped_stacks_keep_their_adam_moments_block_by_block() -> None:
    net = _build("mlp")
    set_index([net], "g", INDEX)
    optimizer = CommonOptimizer({"g": net}, OptimConfig())
    x = torch.randn(8, A, 10, generator=torch.Generator().manual_seed(6))
    scale = torch.arange(1.0, A + 1).view(1, A, 1)  # agents weigh differently: blocks differ

    def step() -> None:
        optimizer.zero_grad()
        (net(x) * scale).square().sum().backward()
        optimizer.clip_and_step()

    for _ in range(3):
        step()
    adam = optimizer.optimizers[0]
    before = {stack.name: (stack.parameter, stack.gather.block,
                           {key: value.clone()
                            for key, value in adam.state[stack.parameter].items()})
              for stack in iter_stacks(net, "g")}
    new_index, sources = [0, 1, 2, 3, 0, 1], [2, 0, 1, 1]
    optimizer.swap_parameters(set_index([net], "g", new_index, sources=sources))
    stacks = {stack.name: stack for stack in iter_stacks(net, "g")}
    current = {id(p) for p in net.parameters()}
    listed = [p for group in adam.param_groups for p in group["params"]]
    assert {id(p) for p in listed} == current
    assert {id(p) for p in optimizer.params["g"]} == current
    for name, (old, block, moments) in before.items():
        new = stacks[name].parameter
        assert new is not old and old not in adam.state
        assert new.shape[0] == 4 * block
        for key in ("exp_avg", "exp_avg_sq"):
            assert adam.state[new][key].shape == new.shape
            for network, source in enumerate(sources):
                torch.testing.assert_close(_blocks(adam.state[new][key], block)[network],
                                           _blocks(moments[key], block)[source], rtol=0, atol=0)
        torch.testing.assert_close(adam.state[new]["step"], moments["step"])
        torch.testing.assert_close(_blocks(new.detach(), block),
                                   _blocks(old.detach(), block)[sources], rtol=0, atol=0)
    values = {name: stack.parameter.detach().clone() for name, stack in stacks.items()}
    step()
    for name, stack in stacks.items():
        assert not torch.equal(stack.parameter.detach(), values[name])
        assert float(adam.state[stack.parameter]["step"]) == 4


# --- torch/hidden_colours_v0 -------------------------------------------------------------


@pytest.mark.parametrize(("agents", "types"), [(8, 2), (7, 3), (12, 4)])
def test_hidden_colours_observations_rewards_and_types(agents: int, types: int) -> None:
    env = marl_envs.make("torch/hidden_colours_v0", num_envs=5,
                         kwargs={"N": agents, "K": types, "type_seed": 4})
    assert env.groups["agent"].obs_shape == (4 + 2 * types,)
    obs = env.reset(seed=0).groups["agent"].obs
    assert obs.shape == (5, agents, 4 + 2 * types)
    assigned = torch.tensor(hidden_types(agents, types, 4))
    counts = torch.bincount(assigned, minlength=types)
    assert counts.sum() == agents and len(counts) == types
    assert all(agents // types <= int(c) <= agents // types + 1 for c in counts)
    generator = torch.Generator().manual_seed(0)
    for _ in range(3):
        step = env.step({"agent": torch.randint(5, (5, agents), generator=generator)})
        group = step.groups["agent"]
        # Landmarks relative to each agent, in colour order, after the move.
        relative = group.final_obs[..., 4:].reshape(5, agents, types, 2)
        own = relative[:, torch.arange(agents), assigned]
        expected = -torch.linalg.vector_norm(own, dim=-1)
        torch.testing.assert_close(group.reward, expected)
    env.close()


def test_hidden_colours_type_seed_changes_the_assignment_and_the_rewards() -> None:
    first, second = hidden_types(8, 2, 0), hidden_types(8, 2, 1)
    assert first != second
    assert first == hidden_types(8, 2, 0)  # the same seed, the same types
    envs = [hidden_colours_v0(num_envs=4, N=8, K=2, type_seed=seed) for seed in (0, 1)]
    assert [env.scenario.types for env in envs] == [first, second]
    rewards = []
    for env in envs:
        env.reset(seed=3)
        actions = torch.randint(5, (4, 8), generator=torch.Generator().manual_seed(1))
        rewards.append(env.step({"agent": actions}).groups["agent"].reward)
    differ = torch.tensor(first) != torch.tensor(second)
    assert torch.equal(rewards[0][:, ~differ], rewards[1][:, ~differ])
    assert (rewards[0][:, differ] != rewards[1][:, differ]).all()
