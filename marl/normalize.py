"""Running statistics for observation, reward and value normalisation."""

from __future__ import annotations

import torch
from torch import nn


class RunningMeanStd(nn.Module):
    """Running mean and variance over a stream of batches (Chan et al. parallel update).

    Statistics live in buffers, so they follow the module to its device and into
    ``state_dict`` checkpoints.

    Args:
        shape: the shape of one sample, e.g. ``(F,)`` for observations or ``()`` for
            rewards.
        epsilon: initial pseudo-count, which keeps the first updates finite.
        clip: normalised values are clipped to ``[-clip, clip]``.
    """

    mean: torch.Tensor
    var: torch.Tensor
    count: torch.Tensor

    def __init__(self, shape: tuple[int, ...] = (), epsilon: float = 1e-4,
                 clip: float = 10.0) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(shape, dtype=torch.float64))
        self.register_buffer("var", torch.ones(shape, dtype=torch.float64))
        self.register_buffer("count", torch.tensor(epsilon, dtype=torch.float64))
        self.clip = clip
        self.shape = tuple(shape)

    @torch.no_grad()
    def update(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> None:
        """Fold in samples ``x: [*N, *shape]``; ``mask: [*N]`` bool selects the real ones.

        Masked samples are weighted out rather than indexed away, so the update never
        waits on the device to count them.
        """
        flat = x.reshape(-1, *self.shape).to(torch.float64)
        weight = (torch.ones(flat.shape[0], dtype=torch.float64, device=flat.device)
                  if mask is None else mask.reshape(-1).to(torch.float64))
        count = weight.sum()
        weight = weight.view(-1, *([1] * len(self.shape)))
        mean = (flat * weight).sum(0) / count.clamp_min(1.0)
        var = ((flat - mean) ** 2 * weight).sum(0) / count.clamp_min(1.0)
        self.update_from_moments(mean, var, count)

    @torch.no_grad()
    def update_from_moments(self, batch_mean: torch.Tensor, batch_var: torch.Tensor,
                            batch_count: float | torch.Tensor) -> None:
        """Fold in a batch given by its mean, (biased) variance and count."""
        delta = batch_mean - self.mean
        total = self.count + batch_count
        self.mean += delta * batch_count / total
        m2 = (self.var * self.count + batch_var * batch_count
              + delta**2 * self.count * batch_count / total)
        self.var.copy_(m2 / total)
        self.count.copy_(total)

    @property
    def std(self) -> torch.Tensor:
        return torch.sqrt(self.var + 1e-8)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """``(x - mean) / std`` clipped, in ``x``'s dtype."""
        out = (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)
        return out.clamp(-self.clip, self.clip)

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.std.to(x.dtype) + self.mean.to(x.dtype)


class ReturnScaler(nn.Module):
    """Scales rewards by the running std of the discounted return.

    The return accumulator restarts at episode ends (terminated or truncated), as in
    Engstrom et al. 2020, "Implementation Matters in Deep Policy Gradients"
    (arXiv:2005.12729). Rewards are divided, not centred, so their sign is kept.

    Args:
        batch_shape: shape of the reward tensor per step, e.g. ``(E, A)``.
    """

    returns: torch.Tensor

    def __init__(self, batch_shape: tuple[int, ...], gamma: float) -> None:
        super().__init__()
        self.gamma = gamma
        self.stats = RunningMeanStd(())
        self.register_buffer("returns", torch.zeros(batch_shape), persistent=False)

    @torch.no_grad()
    def __call__(self, reward: torch.Tensor, ended: torch.Tensor,
                 alive: torch.Tensor) -> torch.Tensor:
        """Scale ``reward: [E, A]``; ``ended``/``alive``: ``[E, A]`` bool."""
        self.returns = self.returns * self.gamma + reward
        self.stats.update(self.returns, alive)
        self.returns = self.returns.masked_fill(ended, 0.0)
        return reward / self.stats.std.to(reward.dtype)


class EpisodeRewardStandardizer(nn.Module):
    """Standardises rewards with statistics that change only at episode ends.

    Rewards of an episode are gathered while it runs and folded into the statistics
    when it ends, so within an episode every reward is scaled the same way.

    Args:
        batch_shape: shape of the reward tensor per step, e.g. ``(E, A)``.
    """

    sums: torch.Tensor
    sq_sums: torch.Tensor
    counts: torch.Tensor

    def __init__(self, batch_shape: tuple[int, ...]) -> None:
        super().__init__()
        self.stats = RunningMeanStd(())
        self.register_buffer("sums", torch.zeros(batch_shape, dtype=torch.float64),
                             persistent=False)
        self.register_buffer("sq_sums", torch.zeros(batch_shape, dtype=torch.float64),
                             persistent=False)
        self.register_buffer("counts", torch.zeros(batch_shape, dtype=torch.float64),
                             persistent=False)

    @torch.no_grad()
    def __call__(self, reward: torch.Tensor, ended: torch.Tensor,
                 alive: torch.Tensor) -> torch.Tensor:
        live = alive.to(torch.float64)
        r = reward.to(torch.float64) * live
        self.sums += r
        self.sq_sums += r * r
        self.counts += live
        done = ended & (self.counts > 0)
        if done.any():
            count = self.counts[done].sum()
            mean = self.sums[done].sum() / count
            var = (self.sq_sums[done].sum() / count - mean**2).clamp_min(0.0)
            self.stats.update_from_moments(mean, var, count)
            for buffer in (self.sums, self.sq_sums, self.counts):
                buffer.masked_fill_(ended, 0.0)
        return self.stats.normalize(reward)
