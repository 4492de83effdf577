"""Properties of the encoder parts in ``marl.nets``: CNN, entity encoder, trunk, chooser.

As for the group MLPs (``tests/test_nets.py``): perturbing agent 0's input changes only
agent 0's output; the three independent backends are one function with the same
gradients; independent encoders tied to a shared one compute the shared function. On top:
the entity encoder ignores row order and absent (all-zero) rows, the trunk with both
options off is the plain MLP bit for bit, and layouts slice flat observations by hand.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

# Exports the gradients in place of the weights; any AgentWeights group works.
from test_nets_recurrent import canonical_grads
from torch import nn
from torch.nn import functional

from marl.nets import (
    BACKENDS,
    POOLS,
    CNNEncoder,
    ConvSpec,
    EntityEncoder,
    EntityLayout,
    EntitySlice,
    GroupedCNN,
    IndependentEncoders,
    SharedEncoder,
    TrunkMLP,
    choose_encoder,
    default_conv_layers,
    make_cnn_encoder,
    make_composed_group_net,
    make_entity_encoder,
    make_trunk,
    mlp,
    mpe_spread_layout,
)
from marl.nets.entity import masked_softmax

AGENTS = 3
IMAGE = (7, 7, 3)
SMALL_CONVS = [ConvSpec(4, 3, 1, 1), ConvSpec(5, 3, 2, 0)]
ENTITIES = (5, 4)
TRUNK_IN, TRUNK_HIDDEN = 5, (8, 8, 6)
KINDS = ("cnn", "entity", "trunk")
OBS_SHAPES: dict[str, tuple[int, ...]] = {
    "cnn": IMAGE, "entity": ENTITIES, "trunk": (TRUNK_IN,)
}
Group = SharedEncoder | IndependentEncoders


def build(kind: str, sharing: str, backend: str = "batched", seed: int = 0,
          pool: str = "attention") -> Group:
    """A small group encoder of ``kind``; every independent backend draws the same weights."""
    torch.manual_seed(seed)
    if kind == "cnn":
        return make_cnn_encoder(sharing, IMAGE, AGENTS, 8, SMALL_CONVS, backend)
    if kind == "entity":
        return make_entity_encoder(sharing, ENTITIES, AGENTS, 6, 8, 2, pool, backend)
    return make_trunk(sharing, TRUNK_IN, 3, AGENTS, TRUNK_HIDDEN, "tanh", 1.0, True, True,
                      backend)


def observations(kind: str, batch: tuple[int, ...] = (4,), seed: int = 1) -> torch.Tensor:
    """``[*batch, A, *obs]``; entity rows 1 and 3 of every agent absent (all zero)."""
    generator = torch.Generator().manual_seed(seed)
    obs = torch.randn(*batch, AGENTS, *OBS_SHAPES[kind], generator=generator)
    if kind == "entity":
        obs[..., 1, :] = 0.0
        obs[..., 3, :] = 0.0
    return obs


def randomise(net: nn.Module, seed: int = 2) -> None:
    """Random non-zero weights everywhere (the pool query and LayerNorm included)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in net.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.5)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("sharing", ["shared", "independent"])
@pytest.mark.parametrize("batch", [(), (4,), (2, 3)])
def test_output_shapes(kind: str, sharing: str, batch: tuple[int, ...]) -> None:
    net = build(kind, sharing)
    out = net(observations(kind, batch))
    assert out.shape == (*batch, AGENTS, net.out_features)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize(
    ("shape", "flat_side"), [((7, 7, 3), 7), ((20, 20, 1), 5), ((84, 84, 3), 7)]
)
def test_default_conv_layers_fit_small_views_and_atari_frames(
    shape: tuple[int, int, int], flat_side: int
) -> None:
    encoder = CNNEncoder(shape, features=16)
    layers = default_conv_layers(shape[0], shape[1])
    assert encoder.dense[0].in_features == layers[-1].channels * flat_side**2
    assert encoder(torch.zeros(2, *shape)).shape == (2, 16)
    conv = encoder.convs[0]
    assert isinstance(conv, nn.Conv2d)
    # Orthogonal with gain sqrt(2): W W^T = 2 I (more inputs than filters) or W^T W = 2 I.
    weight = conv.weight.reshape(conv.out_channels, -1)
    gram = weight @ weight.T if weight.shape[0] <= weight.shape[1] else weight.T @ weight
    torch.testing.assert_close(gram, 2.0 * torch.eye(gram.shape[0]), atol=1e-5, rtol=0)
    assert not conv.bias.any()


def test_a_conv_window_larger_than_the_image_is_refused() -> None:
    with pytest.raises(ValueError, match=r"conv layer 1 .* does not fit its 2 x 2 input"):
        CNNEncoder((4, 4, 1), layers=[ConvSpec(2, 3, 1, 0), ConvSpec(2, 3, 1, 0)])


def test_grouped_cnn_is_one_grouped_convolution_per_layer() -> None:
    net = build("cnn", "independent", "batched")
    core = net.core
    assert isinstance(core, GroupedCNN)
    assert core.conv_weight_0.shape == (AGENTS * 4, 3, 3, 3)
    assert core.conv_weight_1.shape == (AGENTS * 5, 4, 3, 3)
    # Agent 1's weights load into a plain CNNEncoder and compute agent 1's output.
    encoder = CNNEncoder(IMAGE, 8, SMALL_CONVS)
    encoder.load_state_dict(net.get_agent_state(1))
    obs = observations("cnn")
    torch.testing.assert_close(net(obs)[:, 1], encoder(obs[:, 1]), atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("kind", KINDS)
def test_backends_start_from_the_same_weights_under_the_same_seed(kind: str) -> None:
    reference = build(kind, "independent", "loop").export_stacked()
    for backend in ("batched", "fork"):
        for key, value in build(kind, "independent", backend).export_stacked().items():
            assert torch.equal(value, reference[key]), (backend, key)


@pytest.mark.parametrize("kind", KINDS)
def test_backends_agree_on_outputs_and_gradients(kind: str) -> None:
    weights = build(kind, "independent", "loop")
    randomise(weights)
    canonical = weights.export_stacked()
    results = {}
    for backend in BACKENDS:
        net = build(kind, "independent", backend)
        net.load_stacked(canonical)
        obs = observations(kind).requires_grad_()
        out = net(obs)
        (out * torch.linspace(-1, 1, out.numel()).reshape(out.shape)).sum().backward()
        assert isinstance(obs.grad, torch.Tensor)
        results[backend] = (out.detach(), obs.grad, canonical_grads(net))
    out, obs_grad, grads = results["loop"]
    assert obs_grad.abs().sum() > 0
    for backend in ("batched", "fork"):
        torch.testing.assert_close(results[backend][0], out, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(results[backend][1], obs_grad, atol=1e-5, rtol=1e-5)
        for key, grad in grads.items():
            torch.testing.assert_close(results[backend][2][key], grad, atol=1e-5, rtol=1e-5)


FORMS = [("shared", "batched"), *(("independent", backend) for backend in BACKENDS)]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(("sharing", "backend"), FORMS)
def test_perturbing_agent_zero_changes_only_agent_zero(
    kind: str, sharing: str, backend: str
) -> None:
    net = build(kind, sharing, backend)
    obs = observations(kind)
    perturbed = obs.clone()
    perturbed[:, 0] += torch.randn(perturbed[:, 0].shape) * (perturbed[:, 0] != 0)
    before, after = net(obs), net(perturbed)
    assert not torch.allclose(before[:, 0], after[:, 0])
    # Not torch.equal: a BLAS may block a changed batch differently, and TorchScript's
    # executor optimises after the first call; 1e-6 is rounding only, a leak is O(1).
    torch.testing.assert_close(before[:, 1:], after[:, 1:], atol=1e-6, rtol=0)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("backend", BACKENDS)
def test_independent_tied_to_shared_computes_the_shared_function(kind: str, backend: str) -> None:
    shared = build(kind, "shared", seed=3)
    randomise(shared)
    independent = build(kind, "independent", backend)
    independent.tie_to(shared.net)
    obs = observations(kind)
    torch.testing.assert_close(independent(obs), shared(obs), atol=1e-5, rtol=1e-5)


def permuted_rows(obs: torch.Tensor, order: list[int]) -> torch.Tensor:
    return obs[..., order, :]


@pytest.mark.parametrize("pool", POOLS)
@pytest.mark.parametrize(("sharing", "backend"), [("shared", "batched"), ("independent", "batched"),
                                                  ("independent", "loop")])
def test_entity_output_does_not_depend_on_row_order(pool: str, sharing: str, backend: str) -> None:
    net = build("entity", sharing, backend, pool=pool)
    randomise(net)
    obs = observations("entity")
    out = net(obs)
    for order in ([4, 3, 2, 1, 0], [2, 0, 4, 1, 3]):
        torch.testing.assert_close(net(permuted_rows(obs, order)), out, atol=1e-5, rtol=1e-5)
    # Not constant: changing a present row does change the output.
    changed = obs.clone()
    changed[..., 0, :] += 1.0
    assert not torch.allclose(net(changed), out)


@pytest.mark.parametrize("pool", POOLS)
def test_an_absent_row_has_no_influence_also_through_attention(pool: str) -> None:
    torch.manual_seed(0)
    encoder = EntityEncoder(4, 6, 8, 2, pool)
    randomise(encoder)
    present = torch.randn(3, 4, 4)
    with_absent = torch.cat([present[:, :2], torch.zeros(3, 1, 4), present[:, 2:]], dim=1)
    # Exactly equal for mean and max; attention sums in another order (4 vs 5 terms).
    torch.testing.assert_close(encoder(with_absent), encoder(present), atol=1e-6, rtol=1e-6)
    # The same holds for the stacked form of the whole group.
    net = build("entity", "independent", "batched", pool=pool)
    randomise(net)
    obs = observations("entity")
    kept = [0, 2, 4]
    loop = build("entity", "independent", "loop", pool=pool)
    loop.load_stacked(net.export_stacked())
    nets = list(loop.core.children())
    reference = torch.stack([nets[a](obs[:, a][:, kept]) for a in range(AGENTS)], dim=1)
    torch.testing.assert_close(net(obs), reference, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("pool", POOLS)
def test_all_rows_absent_gives_the_head_of_zero_and_finite_gradients(pool: str) -> None:
    torch.manual_seed(0)
    encoder = EntityEncoder(4, 6, 8, 2, pool)
    randomise(encoder)
    obs = torch.zeros(2, 5, 4, requires_grad=True)
    out = encoder(obs)
    expected = torch.relu(encoder.head[0].bias).expand(2, -1)
    torch.testing.assert_close(out, expected)
    out.sum().backward()
    assert obs.grad is not None and torch.isfinite(obs.grad).all()
    assert all(torch.isfinite(p.grad).all() for p in encoder.parameters() if p.grad is not None)


def test_masked_softmax_by_hand() -> None:
    scores = torch.tensor([[1.0, 2.0, 3.0], [5.0, -1.0, 0.0]])
    mask = torch.tensor([[True, False, True], [False, False, False]])
    e1, e3 = torch.exp(torch.tensor(1.0)), torch.exp(torch.tensor(3.0))
    expected = torch.tensor([[e1 / (e1 + e3), 0.0, e3 / (e1 + e3)], [0.0, 0.0, 0.0]])
    torch.testing.assert_close(masked_softmax(scores, mask), expected)


@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_trunk_with_both_options_off_is_the_mlp_bit_for_bit(activation: str) -> None:
    torch.manual_seed(5)
    plain = mlp(TRUNK_IN, TRUNK_HIDDEN, 3, activation, 0.01)
    torch.manual_seed(5)
    trunk = TrunkMLP(TRUNK_IN, TRUNK_HIDDEN, 3, activation, 0.01)
    x = torch.randn(7, TRUNK_IN)
    assert torch.equal(trunk(x), plain(x))
    assert sum(p.numel() for p in trunk.parameters()) == sum(p.numel() for p in plain.parameters())


def test_trunk_layer_norm_and_residual_by_hand() -> None:
    torch.manual_seed(0)
    trunk = TrunkMLP(TRUNK_IN, TRUNK_HIDDEN, 3, "tanh", 1.0, layer_norm=True, residual=True)
    randomise(trunk)
    assert [block.residual for block in trunk.blocks] == [False, True, False]
    state = trunk.state_dict()

    def layer(index: int, h: torch.Tensor) -> torch.Tensor:
        prefix = f"blocks.{index}."
        out = h @ state[prefix + "linear.weight"].T + state[prefix + "linear.bias"]
        mean, var = out.mean(-1, keepdim=True), out.var(-1, unbiased=False, keepdim=True)
        normed = (out - mean) / torch.sqrt(var + 1e-5)
        return torch.tanh(normed * state[prefix + "norm.weight"] + state[prefix + "norm.bias"])

    x = torch.randn(6, TRUNK_IN)
    h1 = layer(0, x)
    h2 = h1 + layer(1, h1)
    h3 = layer(2, h2)
    expected = h3 @ state["out.weight"].T + state["out.bias"]
    torch.testing.assert_close(trunk(x), expected, atol=1e-5, rtol=1e-5)


def test_stacked_trunk_keeps_layer_norm_parameters_per_agent() -> None:
    net = build("trunk", "independent", "batched")
    assert net.core.norm_weight_1.shape == (AGENTS, 1, 8)
    obs = observations("trunk")
    before = net(obs)
    state = net.get_agent_state(2)
    state["blocks.1.norm.weight"] = state["blocks.1.norm.weight"] * 3.0
    net.set_agent_state(2, state)
    after = net(obs)
    assert torch.equal(after[:, :2], before[:, :2])
    assert not torch.allclose(after[:, 2], before[:, 2])


@pytest.mark.parametrize(
    ("shape", "requested", "expected"),
    [((18,), "auto", "mlp"), ((7, 7, 3), "auto", "cnn"), ((6, 7), "auto", "entity"),
     ((84, 84, 3), "cnn", "cnn"), ((6, 7), "entity", "entity"), ((18,), "mlp", "mlp"),
     # Named, the MLP flattens any shape: the baseline for images and entity rows.
     ((7, 7, 3), "mlp", "mlp"), ((27, 5), "mlp", "mlp"), ((2, 3, 4, 5), "mlp", "mlp")],
)
def test_chooser_picks_the_encoder_for_the_shape(
    shape: tuple[int, ...], requested: str, expected: str
) -> None:
    assert choose_encoder(shape, requested) == expected


@pytest.mark.parametrize(
    ("shape", "requested", "message"),
    [((2, 3, 4, 5), "auto", r"no encoder takes observations of shape \[2, 3, 4, 5\]: mlp takes "
      r"\[D\], cnn takes \[H, W, C\], entity takes \[N, F\]"),
     ((), "auto", r"no encoder takes observations of shape \[\]"),
     ((), "mlp", r"encoder 'mlp' does not take observations of shape \[\]"),
     ((18,), "cnn", r"encoder 'cnn' does not take observations of shape \[18\]"),
     ((7, 7, 3), "entity", r"encoder 'entity' does not take .* \[7, 7, 3\]"),
     ((0, 3), "auto", r"has an empty axis"),
     ((18,), "transformer", r"encoder must be one of 'auto', 'mlp', 'cnn', 'entity'")],
)
def test_chooser_errors_are_one_line_and_name_the_encoders(
    shape: tuple[int, ...], requested: str, message: str
) -> None:
    with pytest.raises(ValueError, match=message) as error:
        choose_encoder(shape, requested)
    assert "\n" not in str(error.value)


def mpe_like_obs() -> torch.Tensor:
    """``simple_spread``-like, N=3: vel, pos, 3 landmarks, 2 others, comm; landmark 2 absent."""
    return torch.tensor([
        [0.1, 0.2, 0.3, 0.4, 1.0, 1.5, 0.0, 0.0, 3.0, 3.5, -1.0, -1.5, -2.0, -2.5, 9, 9, 9, 9],
        [0.0, 0.0, 0.0, 0.0, 4.0, 4.5, 5.0, 5.5, 6.0, 6.5, -3.0, -3.5, -4.0, -4.5, 9, 9, 9, 9],
    ])


def test_layout_slices_a_flat_mpe_observation_by_hand() -> None:
    layout = mpe_spread_layout(3)
    assert layout.shape == (6, 4 + 3) and layout.kinds == ["self", "landmark", "agent"]
    rows = layout.rows(mpe_like_obs())
    expected_first = torch.tensor([
        [0.1, 0.2, 0.3, 0.4, 1, 0, 0],
        [1.0, 1.5, 0.0, 0.0, 0, 1, 0],
        [0.0, 0.0, 0.0, 0.0, 0, 0, 0],  # absent landmark: all zero, kind included
        [3.0, 3.5, 0.0, 0.0, 0, 1, 0],
        [-1.0, -1.5, 0.0, 0.0, 0, 0, 1],
        [-2.0, -2.5, 0.0, 0.0, 0, 0, 1],
    ])
    torch.testing.assert_close(rows[0], expected_first)
    # An agent at rest at the origin is still present: its kind bit stays on.
    torch.testing.assert_close(rows[1, 0], torch.tensor([0.0, 0, 0, 0, 1, 0, 0]))
    assert rows.shape == (2, 6, 7)


def test_layout_rows_feed_the_entity_encoder_and_landmark_order_does_not_matter() -> None:
    layout = mpe_spread_layout(3)
    torch.manual_seed(0)
    net = make_entity_encoder("shared", layout.shape, 2, 6, 8, 2)
    randomise(net)
    obs = mpe_like_obs().reshape(1, 2, 18)  # [B, A, D]
    swapped = obs.clone()
    swapped[..., 4:6], swapped[..., 8:10] = obs[..., 8:10], obs[..., 4:6]
    torch.testing.assert_close(net(layout.rows(swapped)), net(layout.rows(obs)))


@pytest.mark.parametrize(
    ("build_layout", "message"),
    [(lambda: EntityLayout((EntitySlice("a", 0, 2, 2), EntitySlice("b", 3, 1, 2))),
      r"entity slices 'a' \(features 0..3\) and 'b' \(from 3\) overlap"),
     (lambda: EntityLayout(()), r"needs at least one EntitySlice"),
     (lambda: EntityLayout((EntitySlice("a", 0, 0, 2),)), r"count >= 1"),
     (lambda: mpe_spread_layout(3).check(12), r"entity slice 'landmark' needs features 4..9|"
      r"entity slice 'agent' needs features 10..13 \(2 x 2 from 10\), but the observation has "
      r"12 features")],
)
def test_bad_layouts_are_refused_in_one_line(build_layout: Callable[[], object],
                                            message: str) -> None:
    with pytest.raises(ValueError, match=message) as error:
        build_layout()
    assert "\n" not in str(error.value)


def test_bad_input_shape_shows_expected_and_actual() -> None:
    net = build("cnn", "independent")
    with pytest.raises(ValueError, match=r"expected input of shape \[\.\.\., 3, 7, 7, 3\].*"
                                         r"got \[4, 7, 7, 3\]"):
        net(torch.zeros(4, 7, 7, 3))


def test_layer_norm_functional_matches_module() -> None:
    """The stacked trunk's functional LayerNorm is nn.LayerNorm's (same eps, affine)."""
    norm = nn.LayerNorm(8)
    randomise(norm)
    x = torch.randn(5, 8)
    normed = functional.layer_norm(x, (8,), eps=norm.eps)
    torch.testing.assert_close(torch.addcmul(norm.bias, normed, norm.weight), norm(x))


@pytest.mark.parametrize("sharing", ["shared", "independent"])
def test_a_named_mlp_reads_an_image_flattened_as_the_flat_mlp_does(sharing: str) -> None:
    torch.manual_seed(0)
    image = make_composed_group_net(sharing, (7, 7, 3), 5, 3, encoder="mlp")
    torch.manual_seed(0)
    flat = make_composed_group_net(sharing, (147,), 5, 3, encoder="mlp")
    assert type(image) is type(flat)
    x = torch.randn(4, 3, 147)
    assert torch.equal(image(x), flat(x))
