"""The common optimiser: one step over summed losses, clipping modes, per-agent mode."""

import copy

import pytest
import torch
from torch import nn

from marl.config import OptimConfig
from marl.nets import make_group_net
from marl.optim import CommonOptimizer


def _groups(backend: str) -> dict[str, nn.Module]:
    torch.manual_seed(0)
    return {"a": make_group_net("independent", 4, 3, 3, hidden=(8,), backend=backend),
            "b": make_group_net("independent", 5, 2, 2, hidden=(8,), backend=backend)}


def _loss(groups: dict[str, nn.Module], step: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(step)
    total = torch.zeros(())
    for name, net in groups.items():
        features = 4 if name == "a" else 5
        x = torch.randn(6, net.num_agents, features, generator=generator)  # type: ignore[arg-type]
        total = total + (net(x) ** 2).mean(dim=(0, 2)).sum()  # a sum of per-agent losses
    return total


def _train(groups: dict[str, nn.Module], config: OptimConfig, steps: int = 3) -> None:
    optimizer = CommonOptimizer(groups, config)
    for step in range(steps):
        optimizer.zero_grad()
        _loss(groups, step).backward()
        optimizer.clip_and_step()


def test_common_step_equals_per_agent_steps_without_coupling_clip() -> None:
    common, separate = _groups("loop"), _groups("loop")
    per_agent = CommonOptimizer(separate, OptimConfig(mode="per_agent"))
    assert len(per_agent.optimizers) == 3 + 2  # one Adam per agent
    _train(common, OptimConfig(lr=0.01, max_grad_norm=None, mode="common"))
    _train(separate, OptimConfig(lr=0.01, max_grad_norm=None, mode="per_agent"))
    for name in common:
        for p, q in zip(common[name].parameters(), separate[name].parameters(), strict=True):
            torch.testing.assert_close(p, q, atol=1e-6, rtol=1e-6)
    untouched = _groups("loop")
    moved = any(not torch.equal(p, q) for p, q in zip(common["a"].parameters(),
                                                       untouched["a"].parameters(), strict=True))
    assert moved


@pytest.mark.parametrize("impl", ["foreach", "loop"])
def test_adam_kernels_give_the_fused_update(impl: str) -> None:
    fused, other = _groups("batched"), _groups("batched")
    _train(fused, OptimConfig(lr=0.01, max_grad_norm=0.5, impl="fused"))
    _train(other, OptimConfig(lr=0.01, max_grad_norm=0.5, impl=impl))
    for name in fused:
        for p, q in zip(fused[name].parameters(), other[name].parameters(), strict=True):
            torch.testing.assert_close(p, q, atol=1e-6, rtol=1e-6)
    assert not all(torch.equal(p, q) for p, q in zip(fused["a"].parameters(),
                                                     _groups("batched")["a"].parameters(),
                                                     strict=True))


def test_unknown_adam_kernel_names_the_choices() -> None:
    with pytest.raises(ValueError, match="optim.impl: expected one of fused, foreach, loop"):
        CommonOptimizer(_groups("batched"), OptimConfig(impl="fast"))


def test_stacked_common_step_equals_loop_per_agent_steps() -> None:
    batched, loop = _groups("batched"), _groups("loop")
    _train(batched, OptimConfig(lr=0.01, max_grad_norm=None))
    _train(loop, OptimConfig(lr=0.01, max_grad_norm=None, mode="per_agent"))
    for name in batched:
        torch.testing.assert_close(batched[name].export_stacked(),  # type: ignore[operator]
                                   loop[name].export_stacked(),  # type: ignore[operator]
                                   atol=1e-6, rtol=1e-6)


def test_global_and_group_clipping() -> None:
    groups = _groups("batched")
    optimizer = CommonOptimizer(groups, OptimConfig(max_grad_norm=1e-3, clip_mode="global"))
    (_loss(groups, 0) * 1000).backward()
    norms = optimizer.clip()
    grads = [p.grad for g in groups.values() for p in g.parameters() if p.grad is not None]
    total = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
    assert norms["grad_norm"] > 1e-3 and total <= 1e-3 * 1.0001

    groups = _groups("batched")
    optimizer = CommonOptimizer(groups, OptimConfig(max_grad_norm=1e-3, clip_mode="group"))
    (_loss(groups, 0) * 1000).backward()
    norms = optimizer.clip()
    assert set(norms) == {"grad_norm/a", "grad_norm/b"}
    for net in groups.values():
        norm = torch.linalg.vector_norm(torch.stack(
            [torch.linalg.vector_norm(p.grad) for p in net.parameters() if p.grad is not None]))
        assert norm <= 1e-3 * 1.0001


def test_per_agent_mode_refuses_stacked_parameters() -> None:
    with pytest.raises(RuntimeError, match="loop.*fork"):
        CommonOptimizer(_groups("batched"), OptimConfig(mode="per_agent"))


def test_state_round_trip() -> None:
    groups = _groups("batched")
    optimizer = CommonOptimizer(groups, OptimConfig(lr=0.01))
    _loss(groups, 0).backward()
    optimizer.clip_and_step()
    restored = CommonOptimizer(copy.deepcopy(groups), OptimConfig(lr=0.01))
    restored.load_state_dict(optimizer.state_dict())
    assert restored.optimizers[0].state_dict()["state"].keys() == \
        optimizer.optimizers[0].state_dict()["state"].keys()
    with pytest.raises(ValueError, match=r"optim.mode or the agent groups differ"):
        CommonOptimizer(_groups("loop"), OptimConfig(mode="per_agent")).load_state_dict(
            optimizer.state_dict())
