"""Target network updates (hard, soft, stacked vs per-agent) and TD3 target smoothing."""

import copy

import pytest
import torch
from torch import nn

import marl.targets
from marl.nets import IndependentNets, make_group_net
from marl.targets import make_target, smoothed_target_action, update_targets


def _pair(seed: int = 0) -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(seed)
    online = make_group_net("independent", 4, 3, num_agents=3, hidden=(8,))
    target = make_target(online)
    with torch.no_grad():
        for p in online.parameters():
            p.add_(torch.randn_like(p))
    return online, target


def test_make_target_is_a_frozen_copy() -> None:
    online, target = _pair()
    assert all(not p.requires_grad for p in target.parameters())
    assert all(p.requires_grad for p in online.parameters())
    assert all(a.data_ptr() != b.data_ptr()
               for a, b in zip(online.parameters(), target.parameters(), strict=True))


def test_hard_update_copies_and_tau_zero_keeps() -> None:
    online, target = _pair()
    before = [p.clone() for p in target.parameters()]
    update_targets([(online, target)], 0.0)
    assert all(torch.equal(a, b) for a, b in zip(before, target.parameters(), strict=True))
    update_targets([(online, target)], 1.0)
    assert all(torch.equal(a, b)
               for a, b in zip(online.parameters(), target.parameters(), strict=True))


def test_soft_update_is_polyak_averaging() -> None:
    online, target = _pair()
    old = [p.clone() for p in target.parameters()]
    update_targets([(online, target)], 0.25)
    for new, was, source in zip(target.parameters(), old, online.parameters(), strict=True):
        torch.testing.assert_close(new, 0.75 * was + 0.25 * source)
    # Repeated soft updates converge to the online weights: (1 - tau)^k of the gap is left.
    gap = [(s - t).abs().max() for s, t in zip(online.parameters(), target.parameters(),
                                                 strict=True)]
    for _ in range(10):
        update_targets([(online, target)], 0.25)
    for g, s, t in zip(gap, online.parameters(), target.parameters(), strict=True):
        assert (s - t).abs().max() <= g * 0.75**10 * 1.001


def test_stacked_and_per_agent_targets_get_the_same_update() -> None:
    torch.manual_seed(3)
    loop = IndependentNets(5, 2, num_agents=4, hidden=(6, 6), backend="loop")
    batched = IndependentNets(5, 2, num_agents=4, hidden=(6, 6), backend="batched")
    batched.load_stacked(loop.export_stacked())
    loop_target, batched_target = make_target(loop), make_target(batched)
    moved = {key: value + torch.randn_like(value) for key, value in loop.export_stacked().items()}
    for net in (loop, batched):
        net.load_stacked(moved)
    update_targets([(loop, loop_target)], 0.3)
    update_targets([(batched, batched_target)], 0.3)
    assert isinstance(loop_target, IndependentNets) and isinstance(batched_target, IndependentNets)
    for key, value in loop_target.export_stacked().items():
        torch.testing.assert_close(batched_target.export_stacked()[key], value)


def test_all_groups_move_in_one_foreach_call(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real = torch._foreach_lerp_

    def counting(tensors: list[torch.Tensor], *args: object) -> None:
        calls.append(len(tensors))
        real(tensors, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(marl.targets.torch, "_foreach_lerp_", counting)
    pairs = [_pair(seed) for seed in range(3)]  # three groups of three stacked agents
    update_targets(pairs, 0.1)
    parameters = sum(len(list(online.parameters())) for online, _ in pairs)
    assert calls == [parameters]


def test_fork_backend_targets_update() -> None:
    torch.manual_seed(0)
    online = make_group_net("independent", 3, 2, num_agents=2, hidden=(4,), backend="fork")
    target = make_target(online)
    with torch.no_grad():
        for p in online.parameters():
            p.add_(1.0)
    update_targets([(online, target)], 1.0)
    x = torch.randn(5, 2, 3)
    torch.testing.assert_close(target(x), online(x))


def test_update_rejects_bad_tau_and_mismatched_pairs() -> None:
    online, target = _pair()
    with pytest.raises(ValueError, match=r"tau must be in \[0, 1\]"):
        update_targets([(online, target)], 1.5)
    other = make_group_net("shared", 4, 3, num_agents=3, hidden=(8, 8))
    with pytest.raises(ValueError, match="make_target"):
        update_targets([(online, copy.deepcopy(other))], 0.5)


def test_target_smoothing_noise_is_clipped_and_actions_stay_in_range() -> None:
    generator = torch.Generator().manual_seed(0)
    action = torch.zeros(10_000, 2, 3)
    smoothed = smoothed_target_action(action, noise_std=5.0, noise_clip=0.3, generator=generator)
    assert smoothed.abs().max() <= 0.3 + 1e-6
    # With a std far above the clip, most of the noise sits at the clip.
    assert (smoothed.abs() > 0.299).float().mean() > 0.9
    edge = smoothed_target_action(torch.full((1000, 1, 2), 0.9), 1.0, 0.5, generator=generator)
    assert edge.max() <= 1.0 and edge.min() >= 0.4 - 1e-6
    small = smoothed_target_action(action, noise_std=0.01, noise_clip=0.5, generator=generator)
    assert 0.005 < small.std() < 0.015
