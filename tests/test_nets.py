"""Properties of the group networks in ``marl.nets``.

The model for these tests is TorchRL's multi-agent MLP tests: perturbing agent 0's input
may only change agent 0's output, and identical inputs give identical outputs exactly when
parameters are shared. On top: the three independent backends are the same function with
the same gradients, and one Adam over stacked weights equals one Adam per agent.
"""

from __future__ import annotations

import copy
import itertools
from typing import Any

import pytest
import torch
from torch import nn

from marl.nets import (
    ACTIVATIONS,
    BACKENDS,
    HIDDEN_GAIN,
    IndependentNets,
    SharedNet,
    StackedMLP,
    linear_layers,
    make_group_net,
    mlp,
)

IN, OUT, AGENTS, HIDDEN = 6, 3, 4, (16, 8)
BATCH_SHAPES = [(), (5,), (4, 3)]  # [A, F], [B, A, F], [T, E, A, F]
# The backends sum in different orders (bmm vs addmm), so they agree up to rounding:
# ~1e-7 relative in float32, which for gradients summed over a batch is ~1e-6 absolute.
GRAD_TOLERANCE = {torch.float32: 1e-5, torch.float64: 1e-12}


def assert_same(actual: torch.Tensor, expected: torch.Tensor, tolerance: float = 1e-6) -> None:
    """Equal up to float rounding: ``tolerance`` absolute and relative."""
    torch.testing.assert_close(actual, expected, atol=tolerance, rtol=tolerance)


def independent(backend: str, seed: int = 0, activation: str = "tanh") -> IndependentNets:
    torch.manual_seed(seed)
    return IndependentNets(IN, OUT, AGENTS, HIDDEN, activation, backend=backend)


def random_canonical(seed: int) -> dict[str, torch.Tensor]:
    """Random weights in the canonical form, biases non-zero so they are exercised too."""
    generator = torch.Generator().manual_seed(seed)
    template = independent("loop").export_stacked()
    return {key: torch.randn(v.shape, generator=generator) * 0.5 for key, v in template.items()}


def canonical_grads(net: IndependentNets) -> dict[str, torch.Tensor]:
    """Parameter gradients of ``net`` in the canonical ``[A, ...]`` form, whatever the backend."""
    if isinstance(net.core, StackedMLP):
        grads: dict[str, torch.Tensor] = {}
        core = net.core
        for name, weight, bias in zip(core.layer_names, core.weights, core.biases, strict=True):
            assert weight.grad is not None and bias.grad is not None
            grads[f"{name}.weight"] = weight.grad.transpose(1, 2)
            grads[f"{name}.bias"] = bias.grad.squeeze(1)
        return grads
    # per_agent_parameters() lists each agent's parameters in its mlp() state-dict order.
    keys = list(net.get_agent_state(0))
    per_agent = [[p.grad for p in params] for params in net.per_agent_parameters()]
    return {key: torch.stack([g[i] for g in per_agent]) for i, key in enumerate(keys)}  # type: ignore[misc]


GROUP_NETS = ["shared-id", "shared-no-id", *(f"independent-{backend}" for backend in BACKENDS)]


def group_net(name: str) -> nn.Module:
    """Build one flavour of group network from its id in ``GROUP_NETS``."""
    torch.manual_seed(0)
    if name.startswith("shared"):
        return SharedNet(IN, OUT, AGENTS, HIDDEN, agent_id=name == "shared-id")
    return independent(name.removeprefix("independent-"))


# ---------------------------------------------------------------- independent backends


def test_backends_start_from_the_same_weights_under_the_same_seed() -> None:
    reference = independent("loop", seed=3).export_stacked()
    for backend in ("batched", "fork"):
        exported = independent(backend, seed=3).export_stacked()
        assert all(torch.equal(exported[key], reference[key]) for key in reference)


@pytest.mark.parametrize("activation", ["tanh", "relu"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("batch_shape", BATCH_SHAPES)
def test_backends_agree_on_outputs_and_parameter_gradients(
    batch_shape: tuple[int, ...], dtype: torch.dtype, activation: str
) -> None:
    weights = random_canonical(seed=1)
    x = torch.randn(*batch_shape, AGENTS, IN, dtype=dtype)
    target = torch.randn(*batch_shape, AGENTS, OUT, dtype=dtype)
    outputs, grads = {}, {}
    for seed, backend in enumerate(BACKENDS):
        net = independent(backend, 10 + seed, activation).to(dtype)  # init overwritten below
        net.load_stacked(weights)
        outputs[backend] = net(x)
        ((outputs[backend] - target) ** 2).sum().backward()
        grads[backend] = canonical_grads(net)
    assert outputs["loop"].shape == (*batch_shape, AGENTS, OUT)
    for backend in ("batched", "fork"):
        assert_same(outputs[backend], outputs["loop"], GRAD_TOLERANCE[dtype])
        for key, grad in grads["loop"].items():
            assert_same(grads[backend][key], grad, GRAD_TOLERANCE[dtype])


def test_export_and_load_round_trip_between_backends() -> None:
    source = independent("batched", seed=5)
    x = torch.randn(7, AGENTS, IN)
    for backend in ("fork", "loop"):
        target = independent(backend, seed=6)
        target.load_stacked(source.export_stacked())
        assert_same(target(x), source(x))
        back = independent("batched", seed=7)
        back.load_stacked(target.export_stacked())
        pairs = zip(back.parameters(), source.parameters(), strict=True)
        assert all(torch.equal(a, b) for a, b in pairs)


def test_agent_state_is_a_plain_mlp_state_dict() -> None:
    net = independent("batched")
    x = torch.randn(9, AGENTS, IN)
    for agent in range(AGENTS):
        single = mlp(IN, HIDDEN, OUT)
        single.load_state_dict(net.get_agent_state(agent))
        assert_same(single(x[:, agent]), net(x)[:, agent])


@pytest.mark.parametrize("out_gain", [1.0, 0.01])
def test_batched_init_is_orthogonal_per_agent_slice(out_gain: float) -> None:
    net = IndependentNets(IN, OUT, AGENTS, (32, 32), out_gain=out_gain, backend="batched")
    assert isinstance(net.core, StackedMLP)
    gains = [HIDDEN_GAIN, HIDDEN_GAIN, out_gain]
    for weight, bias, gain in zip(net.core.weights, net.core.biases, gains, strict=True):
        assert torch.equal(bias, torch.zeros_like(bias))
        for stacked in weight.detach():  # [in, out] = nn.Linear.weight.T
            # Orthogonal rows or columns, whichever side is smaller.
            fan_in, fan_out = stacked.shape
            gram = stacked @ stacked.T if fan_in <= fan_out else stacked.T @ stacked
            identity = torch.eye(min(fan_in, fan_out))
            torch.testing.assert_close(gram, gain**2 * identity, atol=1e-5 * gain**2, rtol=0)
    agents = net.export_stacked()["0.weight"]
    assert not torch.allclose(agents[0], agents[1])  # each agent drew its own matrix


def test_fork_backend_is_scripted_and_differentiable() -> None:
    net = independent("fork").double()
    assert isinstance(net.core, torch.jit.ScriptModule)
    x = torch.randn(3, AGENTS, IN, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(net, (x,))
    net(x.detach()).pow(2).sum().backward()
    for agent_params in net.per_agent_parameters():
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in agent_params)


def test_fork_backend_survives_deepcopy() -> None:
    # Target networks are deep copies; script modules lose some Python methods on copy.
    net = independent("fork")
    clone = copy.deepcopy(net)
    x = torch.randn(5, AGENTS, IN)
    assert torch.equal(clone(x), net(x))
    clone.load_stacked(random_canonical(seed=2))
    assert not torch.allclose(clone(x), net(x))


# ---------------------------------------------------------------- group properties


@pytest.mark.parametrize("name", GROUP_NETS)
@pytest.mark.parametrize("batch_shape", BATCH_SHAPES)
def test_perturbing_agent_zero_changes_only_agent_zero(
    name: str, batch_shape: tuple[int, ...]
) -> None:
    net = group_net(name)
    x = torch.randn(*batch_shape, AGENTS, IN)
    perturbed = x.clone()
    perturbed[..., 0, :] += 1.0
    before, after = net(x), net(perturbed)
    assert not torch.allclose(before[..., 0, :], after[..., 0, :])
    # Not torch.equal: a BLAS may block a changed matrix differently; 1e-7 is rounding only.
    torch.testing.assert_close(before[..., 1:, :], after[..., 1:, :], atol=1e-7, rtol=0)


@pytest.mark.parametrize("name", GROUP_NETS)
def test_identical_inputs_give_identical_outputs_only_when_fully_shared(name: str) -> None:
    net = group_net(name)
    x = torch.randn(8, 1, IN).expand(8, AGENTS, IN)
    out = net(x)
    pairs = list(itertools.combinations(range(AGENTS), 2))
    if name == "shared-no-id":
        assert all(torch.equal(out[:, i], out[:, j]) for i, j in pairs)
    else:
        assert all((out[:, i] - out[:, j]).abs().max() > 1e-3 for i, j in pairs)


@pytest.mark.parametrize("backend", BACKENDS)
def test_independent_tied_to_shared_weights_computes_the_shared_function(backend: str) -> None:
    shared = SharedNet(IN, OUT, AGENTS, HIDDEN, agent_id=False)
    net = independent(backend, seed=4)
    net.tie_to(shared.mlp)
    x = torch.randn(4, 3, AGENTS, IN)
    assert_same(net(x), shared(x))


def test_shared_net_appends_one_hot_agent_id() -> None:
    net = SharedNet(IN, OUT, AGENTS, HIDDEN, agent_id=True)
    assert net.mlp[0].in_features == IN + AGENTS
    assert "agent_eye" not in net.state_dict()  # derived from num_agents, not a weight
    x = torch.randn(2, 5, AGENTS, IN)
    manual = net.mlp(torch.cat([x, torch.eye(AGENTS).expand(2, 5, AGENTS, AGENTS)], dim=-1))
    assert_same(net(x), manual)
    assert net.per_agent_parameters() == [list(net.parameters())]


# ---------------------------------------------------------------- optimisers


@pytest.mark.parametrize("per_agent_backend", ["loop", "fork"])
def test_one_adam_on_stacked_weights_equals_one_adam_per_agent(per_agent_backend: str) -> None:
    weights = random_canonical(seed=8)
    stacked, separate = independent("batched"), independent(per_agent_backend)
    stacked.load_stacked(weights)
    separate.load_stacked(weights)
    common = torch.optim.Adam(stacked.parameters(), lr=1e-2)
    per_agent = [torch.optim.Adam(p, lr=1e-2) for p in separate.per_agent_parameters()]
    generator = torch.Generator().manual_seed(0)
    for _ in range(3):
        x = torch.randn(16, AGENTS, IN, generator=generator)
        target = torch.randn(16, AGENTS, OUT, generator=generator)
        # Common optimiser: the losses of all agents summed, one backward, one step.
        common.zero_grad()
        ((stacked(x) - target) ** 2).sum().backward()
        common.step()
        # Per agent: each optimiser steps on its own agent's loss only.
        for agent, optimiser in enumerate(per_agent):
            optimiser.zero_grad()
            ((separate(x)[:, agent] - target[:, agent]) ** 2).sum().backward()
            optimiser.step()
    after = separate.export_stacked()
    for key, value in stacked.export_stacked().items():
        torch.testing.assert_close(value, after[key], atol=1e-6, rtol=0)
        assert not torch.allclose(value, weights[key])  # the steps did move the weights


def test_batched_backend_refuses_per_agent_parameters() -> None:
    with pytest.raises(RuntimeError, match=r"backend='loop' or backend='fork'.*stacks"):
        independent("batched").per_agent_parameters()


# ---------------------------------------------------------------- builders and errors


def test_mlp_layout_and_init() -> None:
    net = mlp(IN, (32, 16), OUT, activation="relu", out_gain=0.01)
    assert [type(layer) for layer in net] == [nn.Linear, nn.ReLU, nn.Linear, nn.ReLU, nn.Linear]
    layers = [layer for _, layer in linear_layers(net)]
    out_weight = layers[-1].weight.detach()  # [3, 16]: rows orthogonal
    torch.testing.assert_close(out_weight @ out_weight.T, 1e-4 * torch.eye(OUT), atol=1e-8, rtol=0)
    assert all(torch.equal(layer.bias, torch.zeros_like(layer.bias)) for layer in layers)
    assert len(mlp(IN, (), OUT)) == 1


@pytest.mark.parametrize("sharing", ["shared", "independent"])
@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_make_group_net_builds_the_requested_network(sharing: str, activation: str) -> None:
    net = make_group_net(sharing, IN, OUT, AGENTS, HIDDEN, activation, backend="loop")
    expected = SharedNet if sharing == "shared" else IndependentNets
    assert isinstance(net, expected)
    assert net(torch.randn(2, 3, AGENTS, IN)).shape == (2, 3, AGENTS, OUT)
    used = {type(m) for m in net.modules() if isinstance(m, tuple(ACTIVATIONS.values()))}
    assert used == {ACTIVATIONS[activation]}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"sharing": "mixed"}, r"sharing must be one of 'shared', 'independent'; got 'mixed'"),
        ({"backend": "vmap"}, r"backend must be one of 'batched', 'fork', 'loop'; got 'vmap'"),
        ({"activation": "gelu"}, r"activation must be one of 'tanh', 'relu'; got 'gelu'"),
        ({"num_agents": 0}, r"num_agents must be a positive integer; got 0"),
    ],
)
def test_bad_arguments_name_allowed_values_and_what_arrived(
    kwargs: dict[str, Any], message: str
) -> None:
    arguments: dict[str, Any] = {"sharing": "independent", "in_features": IN, "out_features": OUT}
    arguments |= {"num_agents": AGENTS, **kwargs}
    with pytest.raises(ValueError, match=message):
        make_group_net(**arguments)


BAD_SHAPES = [(5, AGENTS + 1, IN), (5, AGENTS, IN + 1), (IN,), (AGENTS, IN, 1)]


@pytest.mark.parametrize("name", GROUP_NETS)
@pytest.mark.parametrize("shape", BAD_SHAPES)
def test_bad_input_shape_shows_expected_and_actual(name: str, shape: tuple[int, ...]) -> None:
    actual = ", ".join(map(str, shape))
    expected = rf"expected input of shape \[\.\.\., {AGENTS}, {IN}\].*got \[{actual}\]"
    with pytest.raises(ValueError, match=expected):
        group_net(name)(torch.zeros(shape))


def test_bad_states_are_rejected_with_expected_keys_and_shapes() -> None:
    net = independent("batched")
    stacked = net.export_stacked()
    with pytest.raises(ValueError, match=r"state\['0.weight'\] must have shape \[4, 16, 6\]"):
        net.load_stacked({**stacked, "0.weight": stacked["0.weight"][:2]})
    with pytest.raises(ValueError, match=r"state keys must be .*got \['0.bias'\]"):
        net.set_agent_state(0, {"0.bias": stacked["0.bias"][0]})
    with pytest.raises(IndexError, match=r"agent must be in \[0, 4\); got 4"):
        net.get_agent_state(AGENTS)
