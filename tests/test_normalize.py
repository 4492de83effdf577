"""Running statistics used for observation, reward and value normalisation."""

import pytest
import torch

from marl.algos.off_policy import OffPolicy
from marl.algos.ppo import PPO
from marl.build import build_env, make_learner
from marl.config import load
from marl.groups import AgentGroup
from marl.logging import EpisodeTracker
from marl.normalize import EpisodeRewardStandardizer, ReturnScaler, RunningMeanStd

CPU = torch.device("cpu")


def test_running_mean_std_matches_batch_statistics_with_mask() -> None:
    torch.manual_seed(0)
    data = torch.randn(500, 4) * 3 + 1
    mask = torch.rand(500) > 0.3
    stats = RunningMeanStd((4,), epsilon=0.0)
    for chunk, m in zip(data.split(70), mask.split(70), strict=True):
        stats.update(chunk, m)
    torch.testing.assert_close(stats.mean.float(), data[mask].mean(0))
    torch.testing.assert_close(stats.var.float(), data[mask].var(0, unbiased=False))
    normalised = stats.normalize(data[mask])
    torch.testing.assert_close(normalised.mean(0), torch.zeros(4), atol=1e-5, rtol=0)


def test_fully_masked_update_changes_nothing() -> None:
    stats = RunningMeanStd((2,))
    stats.update(torch.randn(10, 2))
    before = {k: v.clone() for k, v in stats.state_dict().items()}
    stats.update(torch.randn(5, 2) * 100, torch.zeros(5, dtype=torch.bool))
    for key, value in stats.state_dict().items():
        torch.testing.assert_close(value, before[key])


def test_return_scaler_resets_at_episode_end() -> None:
    scaler = ReturnScaler((1, 1), gamma=0.5)
    alive = torch.ones(1, 1, dtype=torch.bool)
    scaler(torch.ones(1, 1), torch.zeros(1, 1, dtype=torch.bool), alive)
    scaler(torch.ones(1, 1), torch.ones(1, 1, dtype=torch.bool), alive)  # 1 + 0.5 then reset
    assert scaler.returns.item() == 0.0
    out = scaler(torch.full((1, 1), 2.0), torch.zeros(1, 1, dtype=torch.bool), alive)
    assert out.item() > 0  # sign kept: rewards are scaled, not centred


def test_episode_standardizer_updates_only_at_episode_end() -> None:
    norm = EpisodeRewardStandardizer((2, 1))
    alive = torch.ones(2, 1, dtype=torch.bool)
    not_done = torch.zeros(2, 1, dtype=torch.bool)
    first = norm(torch.tensor([[3.0], [5.0]]), not_done, alive)
    torch.testing.assert_close(first, torch.tensor([[3.0], [5.0]]), atol=1e-3, rtol=0)
    norm(torch.tensor([[3.0], [5.0]]), torch.ones(2, 1, dtype=torch.bool), alive)
    assert abs(norm.stats.mean.item() - 4.0) < 1e-3
    assert abs(norm.stats.var.item() - 1.0) < 1e-2


# Agent 0 observes features 1-2 (3-4 are its padding), agent 1 observes all four.
REAL = torch.tensor([[True, True, False, False], [True, True, True, True]])


def test_padded_features_count_only_the_agents_that_observe_them() -> None:
    torch.manual_seed(0)
    data = torch.randn(6, 2, 4) * 2 + 3
    data[:, 0, 2:] = 0.0  # padding
    alive = torch.ones(6, 2, dtype=torch.bool)
    alive[5, 1] = False  # agent 1 left: its last sample counts for no feature
    stats = RunningMeanStd((4,), real=REAL)
    stats.update(data[:3], alive[:3])
    stats.update(data[3:], alive[3:])
    both = torch.cat([data[alive[:, 0], 0, :2], data[alive[:, 1], 1, :2]])
    only_agent_1 = data[alive[:, 1], 1, 2:]
    expected_mean = torch.cat([both.mean(0), only_agent_1.mean(0)])
    expected_var = torch.cat([both.var(0, unbiased=False), only_agent_1.var(0, unbiased=False)])
    # Within what the initial pseudo-count (1e-4, mean 0, variance 1) shifts.
    torch.testing.assert_close(stats.mean.float(), expected_mean, rtol=0, atol=1e-3)
    torch.testing.assert_close(stats.var.float(), expected_var, rtol=0, atol=1e-3)
    torch.testing.assert_close(stats.count.float(), torch.tensor([11.0, 11.0, 5.0, 5.0]),
                               rtol=0, atol=1e-3)
    normalised = stats.normalize(data)
    assert torch.equal(normalised[:, 0, 2:], torch.zeros(6, 2))  # padding stays 0
    torch.testing.assert_close(normalised[:, 1, 2:],
                               (data[:, 1, 2:] - expected_mean[2:]) / expected_var[2:].sqrt(),
                               rtol=1e-3, atol=1e-3)


def test_checkpoint_with_one_count_for_all_features_still_loads() -> None:
    stats = RunningMeanStd((3,))
    old = {"mean": torch.ones(3, dtype=torch.float64), "var": torch.ones(3, dtype=torch.float64),
           "count": torch.tensor(7.0, dtype=torch.float64)}
    stats.load_state_dict(old)
    assert torch.equal(stats.count, torch.full((3,), 7.0, dtype=torch.float64))


@pytest.mark.parametrize("algo", ["ippo", "iql"])
def test_learners_normalise_padded_groups_with_the_observation_mask(algo: str) -> None:
    """``agent_0`` always sees ``[1, 1]`` (padded with ``[0, 0]``), ``agent_1`` sees
    ``[3, 3, 5, 7]``: by hand the mean is ``[2, 2, 5, 7]`` and the variance
    ``[1, 1, 0, 0]``; counting padding would give ``[2, 2, 2.5, 3.5]``."""
    config = load(overrides={"algo.name": algo, "env.task": "toy_factories:padded_obs",
                             "env.num_envs": "2", "algo.num_steps": "8", "algo.obs_norm": "true",
                             "groups.hidden": "[8]", "algo.warmup_steps": "16",
                             "algo.batch_size": "8", "algo.buffer_size": "64"})
    env = build_env(config, CPU)
    learner = make_learner(env, config, CPU)
    learner.collect(EpisodeTracker({"agent": 2}, 2, CPU))
    if isinstance(learner, PPO):
        group = learner.groups["agent"]
        assert isinstance(group, AgentGroup)
        stats = group.obs_norm
        normalised = group.prepare_obs(torch.tensor([[[1, 1, 0, 0], [3, 3, 5, 7.0]]]))
    else:
        assert isinstance(learner, OffPolicy)
        stats = learner.obs_norm["agent"]
        normalised = learner.normalize_obs("agent", torch.tensor([[[1, 1, 0, 0], [3, 3, 5, 7.0]]]))
    env.close()
    assert isinstance(stats, RunningMeanStd)
    # Within what the initial pseudo-count (1e-4, mean 0, variance 1) shifts.
    torch.testing.assert_close(stats.mean.float(), torch.tensor([2.0, 2.0, 5.0, 7.0]),
                               rtol=0, atol=1e-3)
    torch.testing.assert_close(stats.var.float(), torch.tensor([1.0, 1.0, 0.0, 0.0]),
                               rtol=0, atol=1e-3)
    torch.testing.assert_close(normalised, torch.tensor([[[-1.0, -1.0, 0.0, 0.0],
                                                          [1.0, 1.0, 0.0, 0.0]]]),
                               rtol=0, atol=1e-2)
    assert torch.equal(normalised[0, 0, 2:], torch.zeros(2))  # agent 0's padding stays 0


def _fold(norm: RunningMeanStd, x: torch.Tensor, mask: torch.Tensor) -> None:
    for i in range(x.shape[0]):
        norm.update(x[i], mask[i])
    norm.update(x[0])
    norm.update_from_moments(x[1].mean(0), x[1].var(0, unbiased=False), 5.0)


@pytest.mark.parametrize("shape", [(), (4,)], ids=["scalar", "vector"])
def test_statistics_update_the_same_inside_a_compiled_graph(shape: tuple[int, ...]) -> None:
    """torch.compile (AOTAutograd, torch 2.13) dropped in-place updates of 0-dim float64
    buffers: the value and reward statistics of the compiled path kept var 1 and count
    1e-4. Every update path, compiled, matches eager."""
    torch.manual_seed(0)
    x = torch.randn(3, 50, *shape) * 3 + 1
    mask = torch.rand(3, 50) > 0.3
    eager, compiled = RunningMeanStd(shape), RunningMeanStd(shape)
    _fold(eager, x, mask)
    torch.compile(_fold, fullgraph=True)(compiled, x, mask)
    assert eager.count.min() > 100  # the updates happened
    for key in ("mean", "var", "count"):
        torch.testing.assert_close(getattr(compiled, key), getattr(eager, key), msg=key)


def test_return_scaler_scales_the_same_inside_a_compiled_graph() -> None:
    torch.manual_seed(0)
    eager, compiled = ReturnScaler((4, 2), gamma=0.9), ReturnScaler((4, 2), gamma=0.9)
    step = torch.compile(compiled.__call__, fullgraph=True)
    alive = torch.ones(4, 2, dtype=torch.bool)
    for t in range(6):
        reward = torch.randn(4, 2) * 5
        ended = torch.full((4, 2), t == 3)
        torch.testing.assert_close(step(reward, ended, alive), eager(reward, ended, alive))
    assert eager.stats.count.item() == pytest.approx(48, abs=1e-3)
    for key in ("mean", "var", "count"):
        torch.testing.assert_close(getattr(compiled.stats, key), getattr(eager.stats, key))
