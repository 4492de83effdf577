"""Running statistics used for observation, reward and value normalisation."""

import torch

from marl.normalize import EpisodeRewardStandardizer, ReturnScaler, RunningMeanStd


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
