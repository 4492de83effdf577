"""Properties of the recurrent group networks in ``marl.nets.recurrent``.

Every form is checked against a plain reference that steps ``torch.nn.GRUCell`` one time
step at a time; the three independent backends must be the same function with the same
gradients; resets must cut a sequence into independent episodes and dead steps must leave
the state where it was. The group properties of ``tests/test_nets.py`` (agent 0's input
reaches only agent 0's output, sharing) hold over sequences too.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Iterator, Sequence

import numpy as np
import pytest
import torch
from marl_envs.tasks import MemoryEnv
from torch import nn

from marl.nets import (
    ACTIVATIONS,
    BACKENDS,
    HIDDEN_GAIN,
    GRUAgent,
    IndependentGRUs,
    RecurrentGroupNet,
    SharedGRU,
    StackedGRUCell,
    make_recurrent_group_net,
)

IN, OUT, AGENTS, RNN = 5, 3, 3, 8
STEPS, BATCH = 7, 4
HIDDEN_LAYOUTS = [None, (), (12, 10)]  # EPyMARL's one layer of RNN, none, two
FORMS = ["shared-id", "shared-no-id", *(f"independent-{backend}" for backend in BACKENDS)]
# Backends sum in different orders (bmm vs mm), so they agree up to rounding.
TOLERANCE = {torch.float32: 1e-5, torch.float64: 1e-11}


def assert_same(actual: torch.Tensor, expected: torch.Tensor, tolerance: float = 1e-6) -> None:
    torch.testing.assert_close(actual, expected, atol=tolerance, rtol=tolerance)


def assert_untouched(actual: torch.Tensor, expected: torch.Tensor) -> None:
    """Equal but for float32 rounding (a BLAS may block a changed matrix differently, or
    treat the rows of one matrix differently); a real dependence moves outputs by ~0.1."""
    torch.testing.assert_close(actual, expected, atol=1e-6, rtol=0)


def independent(backend: str, seed: int = 0, hidden: Sequence[int] | None = None,
                activation: str = "tanh") -> IndependentGRUs:
    torch.manual_seed(seed)
    return IndependentGRUs(IN, OUT, AGENTS, hidden, RNN, activation, backend=backend)


def build(form: str, seed: int = 0) -> RecurrentGroupNet:
    torch.manual_seed(seed)
    if form.startswith("shared"):
        return SharedGRU(IN, OUT, AGENTS, rnn_hidden=RNN, agent_id=form == "shared-id")
    return independent(form.removeprefix("independent-"), seed)


def sequence(seed: int = 0, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, ...]:
    """``obs [T, B, A, F]``, a non-zero ``hidden [B, A, H]``, and masks with resets and
    dead steps: copy 0 continues the episode ``hidden`` comes from, the others start one
    at step 0; later episodes start at random."""
    generator = torch.Generator().manual_seed(seed)
    obs = torch.randn(STEPS, BATCH, AGENTS, IN, generator=generator, dtype=dtype)
    hidden = torch.randn(BATCH, AGENTS, RNN, generator=generator, dtype=dtype) * 0.5
    first = torch.rand(STEPS, BATCH, AGENTS, generator=generator) < 0.2
    first[0, 1:] = True
    alive = torch.rand(STEPS, BATCH, AGENTS, generator=generator) < 0.75
    return obs, hidden, first, alive


def random_canonical(seed: int, hidden: Sequence[int] | None = None) -> dict[str, torch.Tensor]:
    """Random weights in the canonical ``[A, ...]`` form, biases non-zero too."""
    generator = torch.Generator().manual_seed(seed)
    template = independent("loop", hidden=hidden).export_stacked()
    return {key: torch.randn(v.shape, generator=generator) * 0.4 for key, v in template.items()}


def canonical_grads(net: IndependentGRUs) -> dict[str, torch.Tensor]:
    """Parameter gradients in the canonical form, whatever the backend.

    The canonical form is a re-layout of the parameters, so exporting the gradients in
    the parameters' place gives them in that layout.
    """
    parameters = list(net.parameters())
    with torch.no_grad():
        saved = [p.detach().clone() for p in parameters]
        for p in parameters:
            assert p.grad is not None
            p.copy_(p.grad)
        grads = net.export_stacked()
        for p, value in zip(parameters, saved, strict=True):
            p.copy_(value)
    return grads


def reference(agent: GRUAgent, obs: torch.Tensor, hidden: torch.Tensor, first: torch.Tensor,
              alive: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One agent, one step at a time through ``nn.GRUCell.forward``: obs ``[T, N, F]``."""
    outs = []
    for t in range(obs.shape[0]):
        hidden = torch.where(first[t, :, None], torch.zeros_like(hidden), hidden)
        new = agent.gru(agent.trunk(obs[t]), hidden)
        hidden = torch.where(alive[t, :, None], new, hidden)
        outs.append(agent.head(hidden))
    return torch.stack(outs), hidden


# ---------------------------------------------------------------- one function, four forms


def test_backends_start_from_the_same_weights_under_the_same_seed() -> None:
    reference_weights = independent("loop", seed=3).export_stacked()
    for backend in ("batched", "fork"):
        exported = independent(backend, seed=3).export_stacked()
        assert all(torch.equal(exported[k], reference_weights[k]) for k in reference_weights)


@pytest.mark.parametrize("hidden", HIDDEN_LAYOUTS, ids=["default", "none", "two"])
@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_every_backend_matches_a_grucell_reference(
    hidden: Sequence[int] | None, activation: str
) -> None:
    weights = random_canonical(seed=1, hidden=hidden)
    obs, state, first, alive = sequence(seed=2)
    layers = [RNN] if hidden is None else list(hidden)
    for backend in BACKENDS:
        net = independent(backend, seed=5, hidden=hidden, activation=activation)
        net.load_stacked(weights)
        out, last = net(obs, state, first, alive)
        for index in range(AGENTS):
            agent = GRUAgent(IN, OUT, layers, RNN, activation, 1.0)
            agent.load_state_dict(net.get_agent_state(index))
            expected_out, expected_last = reference(
                agent, obs[:, :, index], state[:, index], first[:, :, index], alive[:, :, index]
            )
            assert_same(out[:, :, index], expected_out)
            assert_same(last[:, index], expected_last)


@pytest.mark.parametrize("agent_id", [True, False])
def test_shared_form_matches_a_grucell_reference(agent_id: bool) -> None:
    net = SharedGRU(IN, OUT, AGENTS, rnn_hidden=RNN, agent_id=agent_id)
    obs, state, first, alive = sequence(seed=3)
    out, last = net(obs, state, first, alive)
    for index in range(AGENTS):
        agent_obs = obs[:, :, index]
        if agent_id:
            one_hot = torch.eye(AGENTS)[index].expand(STEPS, BATCH, AGENTS)
            agent_obs = torch.cat([agent_obs, one_hot], dim=-1)
        expected_out, expected_last = reference(
            net.agent, agent_obs, state[:, index], first[:, :, index], alive[:, :, index]
        )
        assert_same(out[:, :, index], expected_out)
        assert_same(last[:, index], expected_last)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("hidden", HIDDEN_LAYOUTS, ids=["default", "none", "two"])
def test_backends_agree_on_outputs_and_gradients_over_sequences(
    hidden: Sequence[int] | None, dtype: torch.dtype
) -> None:
    weights = random_canonical(seed=4, hidden=hidden)
    obs, state, first, alive = sequence(seed=5, dtype=dtype)
    target = torch.randn(STEPS, BATCH, AGENTS, OUT, dtype=dtype)
    results = {}
    for seed, backend in enumerate(BACKENDS):
        net = independent(backend, 10 + seed, hidden).to(dtype)  # init overwritten below
        net.load_stacked({key: value.to(dtype) for key, value in weights.items()})
        obs_in, state_in = obs.clone().requires_grad_(), state.clone().requires_grad_()
        out, last = net(obs_in, state_in, first, alive)
        (((out - target) ** 2).sum() + (last**2).sum()).backward()
        assert obs_in.grad is not None and state_in.grad is not None
        results[backend] = {"out": out.detach(), "last": last.detach(), "obs": obs_in.grad,
                            "hidden": state_in.grad, **canonical_grads(net)}
    assert results["loop"]["obs"].abs().sum() > 0 and results["loop"]["hidden"].abs().sum() > 0
    for backend in ("batched", "fork"):
        assert results[backend].keys() == results["loop"].keys()
        for key, expected in results["loop"].items():
            assert_same(results[backend][key], expected, TOLERANCE[dtype])


def test_stacked_gru_cell_matches_torch_grucell() -> None:
    cells = [nn.GRUCell(4, 6) for _ in range(3)]  # PyTorch's own init, biases non-zero
    stacked = StackedGRUCell(cells)
    x, h0 = torch.randn(5, 2, 4), torch.randn(2, 6)
    gates_in = stacked.input_gates(x.reshape(1, 10, 4).expand(3, -1, -1)).reshape(3, 5, 2, 18)
    states = stacked.scan(gates_in, h0.expand(3, -1, -1), torch.ones(3, 5, 2, 1), None)
    for index, cell in enumerate(cells):
        h = h0
        for t in range(5):
            h = cell(x[t], h)
            assert_same(states[index, t], h)
        fresh = nn.GRUCell(4, 6)
        fresh.load_state_dict(stacked.agent_state(index))
        assert all(torch.equal(a, b) for a, b in zip(fresh.parameters(), cell.parameters(),
                                                     strict=True))


@pytest.mark.parametrize("backend", BACKENDS)
def test_independent_tied_to_shared_weights_computes_the_shared_function(backend: str) -> None:
    shared = SharedGRU(IN, OUT, AGENTS, rnn_hidden=RNN, agent_id=False)
    net = independent(backend, seed=4)
    net.tie_to(shared.agent)
    obs, state, first, alive = sequence(seed=6)
    for actual, expected in zip(net(obs, state, first, alive), shared(obs, state, first, alive),
                                strict=True):
        assert_same(actual, expected)


@pytest.mark.parametrize("form", FORMS)
def test_step_over_the_sequence_equals_forward(form: str) -> None:
    net = build(form)
    obs, state, first, alive = sequence(seed=7)
    out, last = net(obs, state, first, alive)
    hidden = state
    for t in range(STEPS):
        step_out, hidden = net.step(obs[t], hidden, first[t], alive[t])
        assert step_out.shape == (BATCH, AGENTS, OUT)
        assert_same(step_out, out[t])
    assert_same(hidden, last)


# ---------------------------------------------------------------- resets, dead steps, agents


@pytest.mark.parametrize("form", FORMS)
def test_a_reset_makes_later_outputs_independent_of_earlier_inputs(form: str) -> None:
    net = build(form)
    obs, state, _, alive = sequence(seed=8)
    first = torch.zeros(STEPS, BATCH, AGENTS, dtype=torch.bool)
    first[0] = first[3, 0] = True  # copy 0: episode 1 is steps 0-2, episode 2 steps 3-6
    changed_obs, changed_state = obs.clone(), state.clone()
    changed_obs[:3, 0] += torch.randn(3, AGENTS, IN)
    changed_state[0] += 1.0
    alive.fill_(True)
    out, last = net(obs, state, first, alive)
    changed_out, changed_last = net(changed_obs, changed_state, first, alive)
    assert (changed_out[:3, 0] - out[:3, 0]).abs().amin(dim=-1).gt(0).all()
    assert_untouched(changed_out[3:, 0], out[3:, 0])  # episode 2 of copy 0 unaffected
    assert_untouched(changed_last[0], last[0])
    assert_untouched(changed_out[:, 1:], out[:, 1:])  # other copies unaffected
    # No gradient path from episode 1 into episode 2 either.
    obs_in = obs.clone().requires_grad_()
    net(obs_in, state, first, alive)[0][3:, 0].sum().backward()
    assert obs_in.grad is not None
    assert torch.equal(obs_in.grad[:3, 0], torch.zeros(3, AGENTS, IN))
    assert obs_in.grad[3:, 0].abs().sum() > 0


@pytest.mark.parametrize("form", FORMS)
def test_a_dead_agent_state_does_not_move(form: str) -> None:
    net = build(form)
    obs, state, first, _ = sequence(seed=9)
    first = torch.zeros_like(first)
    alive = torch.ones(STEPS, BATCH, AGENTS, dtype=torch.bool)
    alive[2:4, 0, 1] = False  # copy 0, agent 1 dead at steps 2 and 3
    _, moved = net.step(obs[0], state, first[0], alive[0])
    alive_step = alive[2].clone()
    _, held = net.step(obs[2], state, first[2], alive_step)
    assert torch.equal(held[0, 1], state[0, 1])
    assert (held[0, 0] != state[0, 0]).all() and (moved[0, 1] != state[0, 1]).all()
    # Over a sequence: garbage at the dead steps changes nothing ...
    out, last = net(obs, state, first, alive)
    garbage = obs.clone()
    garbage[2:4, 0, 1] = 1e6
    garbage_out, garbage_last = net(garbage, state, first, alive)
    assert_untouched(garbage_out, out)
    assert_untouched(garbage_last, last)
    # ... the output there is the head on the held state, i.e. the last alive step's ...
    assert torch.isfinite(out).all()
    assert_untouched(out[2, 0, 1], out[1, 0, 1])
    assert_untouched(out[3, 0, 1], out[1, 0, 1])
    # ... and the alive steps see what they would see had the dead steps never happened.
    kept = [0, 1, 4, 5, 6]
    skipped_out, skipped_last = net(obs[kept], state, first[kept], None)
    assert_same(skipped_out[:, 0, 1], out[kept, 0, 1])
    assert_same(skipped_last[0, 1], last[0, 1])


@pytest.mark.parametrize("form", FORMS)
def test_perturbing_agent_zero_changes_only_agent_zero(form: str) -> None:
    net = build(form)
    obs, state, first, alive = sequence(seed=10)
    alive.fill_(True)
    perturbed_obs, perturbed_state = obs.clone(), state.clone()
    perturbed_obs[2, :, 0] += 1.0
    perturbed_state[:, 0] += 1.0
    (out, last), (perturbed_out, perturbed_last) = (
        net(obs, state, first, alive), net(perturbed_obs, perturbed_state, first, alive))
    assert not torch.allclose(out[2:, :, 0], perturbed_out[2:, :, 0])
    assert not torch.allclose(last[:, 0], perturbed_last[:, 0])
    assert_untouched(perturbed_out[:, :, 1:], out[:, :, 1:])
    assert_untouched(perturbed_last[:, 1:], last[:, 1:])


@pytest.mark.parametrize("form", FORMS)
def test_identical_inputs_give_identical_outputs_only_when_fully_shared(form: str) -> None:
    net = build(form)
    obs = torch.randn(STEPS, BATCH, 1, IN).expand(-1, -1, AGENTS, -1)
    first = torch.zeros(STEPS, BATCH, AGENTS, dtype=torch.bool)
    out, last = net(obs, net.initial_hidden(BATCH), first)
    pairs = list(itertools.combinations(range(AGENTS), 2))
    if form == "shared-no-id":  # rows of one matmul: equal but for rounding
        for i, j in pairs:
            assert_untouched(out[:, :, i], out[:, :, j])
            assert_untouched(last[:, i], last[:, j])
    else:
        assert all((out[:, :, i] - out[:, :, j]).abs().max() > 1e-3 for i, j in pairs)


# ---------------------------------------------------------------- state, shapes, init


@pytest.mark.parametrize("form", FORMS)
def test_shapes_and_the_state_lives_outside_the_module(form: str) -> None:
    net = build(form).double()
    zeros = net.initial_hidden(BATCH)
    assert zeros.shape == (BATCH, AGENTS, RNN) and zeros.dtype == torch.float64
    assert torch.equal(zeros, torch.zeros_like(zeros))
    obs, state, first, alive = (t.double() if t.is_floating_point() else t for t in sequence())
    out, last = net(obs, state, first, alive)
    assert out.shape == (STEPS, BATCH, AGENTS, OUT) and last.shape == (BATCH, AGENTS, RNN)
    again, last_again = net(obs, state, first, alive)  # nothing carried over from the call
    assert torch.equal(again, out) and torch.equal(last_again, last)
    # Weights only: no state tensor hides in the module.
    assert all(key.split(".")[-1].startswith(("weight", "bias")) for key in net.state_dict())
    assert [name for name, _ in net.named_buffers()] in ([], ["agent_eye"])


def assert_orthogonal(weight: torch.Tensor, gain: float) -> None:
    """Orthogonal rows or columns, whichever side is smaller, scaled by ``gain``."""
    rows, columns = weight.shape
    gram = weight @ weight.T if rows <= columns else weight.T @ weight
    expected = gain**2 * torch.eye(min(rows, columns))
    torch.testing.assert_close(gram, expected, atol=1e-5 * max(gain**2, 1e-2), rtol=0)


def assert_initialised(state: dict[str, torch.Tensor], out_gain: float) -> None:
    """One agent's state: orthogonal trunk (sqrt 2), GRU gates (1), head (out_gain); 0 biases."""
    for key, value in state.items():
        if key.endswith("bias") or "bias_" in key:
            assert torch.equal(value, torch.zeros_like(value)), key
        elif key.startswith("trunk"):
            assert_orthogonal(value, HIDDEN_GAIN)
        elif key.startswith("head"):
            assert_orthogonal(value, out_gain)
        else:  # gru.weight_ih, gru.weight_hh: [3H, in], orthogonal per gate
            for block in value.chunk(3, dim=0):
                assert_orthogonal(block, 1.0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_init_is_orthogonal_for_each_agent(backend: str) -> None:
    net = IndependentGRUs(IN, OUT, AGENTS, (32,), 16, out_gain=0.01, backend=backend)
    for agent in range(AGENTS):
        assert_initialised(net.get_agent_state(agent), 0.01)
    stacked = net.export_stacked()["gru.weight_hh"]
    assert not torch.allclose(stacked[0], stacked[1])  # each agent drew its own matrices
    shared = SharedGRU(IN, OUT, AGENTS, (32,), 16, out_gain=1.0)
    assert_initialised(shared.agent.state_dict(), 1.0)


def test_fork_backend_is_scripted_differentiable_and_survives_deepcopy() -> None:
    net = independent("fork").double()
    assert isinstance(net.core, torch.jit.ScriptModule)
    obs, state, first, alive = sequence(seed=11, dtype=torch.float64)
    obs, state = obs[:3, :2].requires_grad_(), state[:2].requires_grad_()
    first, alive = first[:3, :2], alive[:3, :2]
    assert torch.autograd.gradcheck(lambda o, h: net(o, h, first, alive), (obs, state))
    clone = copy.deepcopy(net)  # target networks are deep copies
    assert torch.equal(clone(obs, state, first, alive)[0], net(obs, state, first, alive)[0])
    clone.load_stacked({k: v.double() for k, v in random_canonical(seed=2).items()})
    assert not torch.allclose(clone(obs, state, first, alive)[0], net(obs, state, first, alive)[0])


def test_batched_backend_gradients_pass_gradcheck() -> None:
    net = independent("batched").double()
    obs, state, first, alive = sequence(seed=12, dtype=torch.float64)
    obs, state = obs[:3, :2].requires_grad_(), state[:2].requires_grad_()
    assert torch.autograd.gradcheck(
        lambda o, h: net(o, h, first[:3, :2], alive[:3, :2]), (obs, state))


# ---------------------------------------------------------------- builder and errors


@pytest.mark.parametrize("sharing", ["shared", "independent"])
@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_builder_gives_the_epymarl_layout(sharing: str, activation: str) -> None:
    net = make_recurrent_group_net(sharing, IN, OUT, AGENTS, rnn_hidden=RNN,
                                   activation=activation, backend="loop")
    assert isinstance(net, SharedGRU if sharing == "shared" else IndependentGRUs)
    agent = net.agent if isinstance(net, SharedGRU) else net.core[0]
    width = IN + AGENTS if sharing == "shared" else IN
    assert [type(m) for m in agent.trunk] == [nn.Linear, ACTIVATIONS[activation]]
    assert (agent.trunk[0].in_features, agent.trunk[0].out_features) == (width, RNN)
    assert (agent.gru.input_size, agent.gru.hidden_size) == (RNN, RNN)
    assert (agent.head[0].in_features, agent.head[0].out_features) == (RNN, OUT)
    bare = make_recurrent_group_net(sharing, IN, OUT, AGENTS, hidden=(), rnn_hidden=RNN,
                                    backend="loop")
    bare_agent = bare.agent if isinstance(bare, SharedGRU) else bare.core[0]
    assert len(bare_agent.trunk) == 0 and bare_agent.gru.input_size == width


def test_batched_backend_refuses_per_agent_parameters() -> None:
    with pytest.raises(RuntimeError, match=r"backend='loop'.*Build IndependentGRUs\(\.\.\."):
        independent("batched").per_agent_parameters()
    per_agent = independent("loop").per_agent_parameters()
    assert len(per_agent) == AGENTS and all(len(params) == 8 for params in per_agent)


def _bad(name: str) -> tuple[torch.Tensor, ...]:
    obs, state, first, alive = sequence()
    if name == "obs":
        obs = obs[..., 1:]
    elif name == "hidden":
        state = state[:, :, 1:]
    elif name == "first":
        first = first[1:]
    elif name == "alive-dtype":
        alive = alive.float()
    elif name == "no-steps":
        obs, first, alive = obs[:0], first[:0], alive[:0]
    return obs, state, first, alive


@pytest.mark.parametrize("form", ["shared-id", "independent-batched"])
@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("obs", r"expected obs of shape \[T, B, 3, 5\] \(\[time, batch.*got \[7, 4, 3, 4\]"),
        ("hidden", r"expected hidden of shape \[4, 3, 8\].*initial_hidden.*got \[4, 3, 7\]"),
        ("first", r"expected first of shape \[7, 4, 3\].*got \[6, 4, 3\]"),
        ("alive-dtype", r"expected alive to be a bool tensor, got torch.float32"),
        ("no-steps", r"needs at least one time step; got obs \[0, 4, 3, 5\]"),
    ],
)
def test_bad_inputs_say_what_was_expected_and_what_arrived(
    form: str, name: str, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        build(form)(*_bad(name))


def test_bad_arguments_name_allowed_values_and_what_arrived() -> None:
    with pytest.raises(ValueError, match=r"sharing must be one of 'shared', 'independent'"):
        make_recurrent_group_net("mixed", IN, OUT, AGENTS)
    with pytest.raises(ValueError, match=r"backend must be one of .*; got 'vmap'"):
        make_recurrent_group_net("shared", IN, OUT, AGENTS, backend="vmap")
    with pytest.raises(ValueError, match=r"rnn_hidden must be a positive integer; got 0"):
        make_recurrent_group_net("independent", IN, OUT, AGENTS, rnn_hidden=0)
    with pytest.raises(ValueError, match=r"expected obs of shape \[B, 3, 5\]"):
        build("shared-id").step(torch.zeros(2, AGENTS, IN + 1), torch.zeros(2, AGENTS, RNN),
                                torch.zeros(2, AGENTS, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"one agent's GRUAgent state dict"):
        independent("batched").set_agent_state(0, {})


# ---------------------------------------------------------------- learning toy/memory


def memory_sequences(rows: int, episodes: int, seed: int) -> tuple[torch.Tensor, ...]:
    """``rows`` rows of ``episodes`` toy/memory episodes back to back (2 agents, 4 cues,
    delay 3): ``obs [T, rows, 2, 5]``, ``first``, ``query [T, rows, 2]`` and the cues."""
    env = MemoryEnv(num_agents=2, num_cues=4, delay=3)
    env.reset(seed=seed)
    obs, first, query, cues = [], [], [], []
    for _ in range(rows):
        row: list[list[np.ndarray]] = [[], [], [], []]
        for _ in range(episodes):
            observations, _ = env.reset()
            for time in range(env.delay + 2):
                row[0].append(np.stack([observations[a] for a in env.possible_agents]))
                row[1].append(np.full(2, time == 0))
                row[2].append(np.full(2, time == env.delay + 1))
                row[3].append(env.cues.copy())
                observations = env.step(dict.fromkeys(env.agents, 0))[0]
        for store, values in zip((obs, first, query, cues), row, strict=True):
            store.append(np.stack(values))
    return tuple(torch.as_tensor(np.stack(values, axis=1)) for values in (obs, first, query, cues))


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Small ops under load: two threads that wait on each other ran 20x slower here."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.usefixtures("one_thread")
def test_gru_learns_the_memory_task_and_a_memoryless_copy_stays_at_chance() -> None:
    train, test = memory_sequences(32, 2, seed=0), memory_sequences(64, 3, seed=1)
    accuracy = {}
    for memory in (True, False):
        torch.manual_seed(1)
        net = SharedGRU(5, 4, 2, rnn_hidden=32, out_gain=0.01)
        optimiser = torch.optim.Adam(net.parameters(), lr=2e-2)

        def logits(data: tuple[torch.Tensor, ...], memory: bool = memory,
                   net: SharedGRU = net) -> torch.Tensor:
            obs, first, query, _ = data
            # A state zeroed before every step is no memory at all.
            resets = first if memory else torch.ones_like(first)
            return net(obs, net.initial_hidden(obs.shape[1]), resets)[0][query]

        for _ in range(100):
            loss = nn.functional.cross_entropy(logits(train), train[3][train[2]])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        with torch.no_grad():
            answers = logits(test).argmax(-1)
        accuracy[memory] = (answers == test[3][test[2]]).float().mean().item()
    assert accuracy[True] >= 0.95  # the optimum is 1
    assert accuracy[False] <= 0.25 + 0.08  # chance is 1/4


@pytest.mark.parametrize("form", ["shared-id", "independent-batched", "independent-loop"])
def test_unroll_together_equals_unrolling_each(form: str) -> None:
    """A policy and a critic run as one scan give each one's own outputs and gradients."""
    from marl.nets import unroll_together

    nets = [build(form, seed=seed) for seed in (1, 2)]
    torch.manual_seed(0)
    obs = [torch.randn(STEPS, BATCH, AGENTS, IN) for _ in nets]
    hidden = [torch.randn(BATCH, AGENTS, RNN) for _ in nets]
    first = torch.rand(STEPS, BATCH, AGENTS) < 0.2
    alive = torch.rand(STEPS, BATCH, AGENTS) < 0.8
    joint = unroll_together(nets, obs, hidden, first, alive)
    sum(out.square().sum() for out, _ in joint).backward()
    joint_grads = [[p.grad.clone() for p in net.parameters()] for net in nets]
    for net in nets:
        net.zero_grad()
    alone = [net.unroll(x, h, first, alive) for net, x, h in zip(nets, obs, hidden, strict=True)]
    sum(out.square().sum() for out, _ in alone).backward()
    for (out_j, states_j), (out_a, states_a) in zip(joint, alone, strict=True):
        assert_same(out_j, out_a)
        assert_same(states_j, states_a)
    for net, grads in zip(nets, joint_grads, strict=True):
        for parameter, grad in zip(net.parameters(), grads, strict=True):
            assert parameter.grad is not None
            assert_same(grad, parameter.grad, 1e-5)
