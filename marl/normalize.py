"""Running statistics for observation, reward and value normalisation."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class RunningMeanStd(nn.Module):
    """Running mean and variance over a stream of batches (Chan et al. parallel update).

    Every entry of a sample keeps its own count, so entries that only some samples
    really have (the padded features of a group whose agents observe different numbers
    of features) are averaged over the samples that have them. Statistics live in
    buffers, so they follow the module to its device and into ``state_dict`` checkpoints.

    Args:
        shape: the shape of one sample, e.g. ``(F,)`` for observations or ``()`` for
            rewards.
        epsilon: initial pseudo-count, which keeps the first updates finite.
        clip: normalised values are clipped to ``[-clip, clip]``.
        real: ``[*M, *shape]`` bool, broadcast against the trailing axes of every input,
            True where an entry is real: a group's ``[A, F]`` observation mask, False at
            an agent's padding. Padding never enters the statistics and normalises to 0,
            the constant the network sees there without normalisation.
    """

    mean: torch.Tensor
    var: torch.Tensor
    count: torch.Tensor
    real: torch.Tensor | None

    def __init__(self, shape: tuple[int, ...] = (), epsilon: float = 1e-4,
                 clip: float = 10.0, real: torch.Tensor | None = None) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(shape, dtype=torch.float64))
        self.register_buffer("var", torch.ones(shape, dtype=torch.float64))
        self.register_buffer("count", torch.full(shape, epsilon, dtype=torch.float64))
        if real is not None and tuple(real.shape[real.dim() - len(shape):]) != tuple(shape):
            raise ValueError(f"real mask of shape {list(real.shape)} does not end in the "
                             f"sample shape {list(shape)}")
        if real is not None and bool(real.all()):
            real = None  # nothing is padding: skip the masking
        self.register_buffer("real", None if real is None else real.to(torch.bool),
                             persistent=False)
        self.clip = clip
        self.shape = tuple(shape)

    @torch.no_grad()
    def update(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> None:
        """Fold in samples ``x: [*N, *shape]``; ``mask`` (bool) selects the real ones:
        ``[*N]`` whole samples (e.g. alive agents), or ``[*N, *shape]`` single entries.

        Masked samples are weighted out rather than indexed away, so the update never
        waits on the device to count them.
        """
        flat = x.reshape(-1, *self.shape).to(torch.float64)
        weight: torch.Tensor | None = None
        if mask is not None:
            if mask.dim() == x.dim() - len(self.shape):
                mask = mask.view(*mask.shape, *([1] * len(self.shape)))
            weight = mask.to(torch.float64)
        if self.real is not None:
            weight = self.real.to(torch.float64) if weight is None else weight * self.real
        if weight is None:  # every entry counts: no weight tensor of the samples' size
            count = torch.full(self.shape, float(flat.shape[0]), dtype=torch.float64,
                               device=x.device)
            mean = flat.sum(0) / count.clamp_min(1.0)
            var = ((flat - mean) ** 2).sum(0) / count.clamp_min(1.0)
        else:
            weight = weight.expand(x.shape).reshape(-1, *self.shape)
            count = weight.sum(0)
            mean = (flat * weight).sum(0) / count.clamp_min(1.0)
            var = ((flat - mean) ** 2 * weight).sum(0) / count.clamp_min(1.0)
        self.update_from_moments(mean, var, count)

    @torch.no_grad()
    def update_from_moments(self, batch_mean: torch.Tensor, batch_var: torch.Tensor,
                            batch_count: float | torch.Tensor) -> None:
        """Fold in a batch given by its mean, (biased) variance and count (per entry or
        one for all)."""
        delta = batch_mean - self.mean
        total = self.count + batch_count
        mean = self.mean + delta * batch_count / total
        m2 = (self.var * self.count + batch_var * batch_count
              + delta**2 * self.count * batch_count / total)
        # Index assignment, not copy_ or +=: under torch.compile (torch 2.13, AOTAutograd)
        # in-place updates of 0-dim float64 buffers (value and reward statistics) were
        # silently dropped from the graph; tests/test_normalize.py checks it compiled.
        self.mean[...] = mean
        self.var[...] = m2 / total
        self.count[...] = total

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str,
                              *args: Any, **kwargs: Any) -> None:
        # Checkpoints written before per-entry counts hold one count for all entries.
        key = prefix + "count"
        count = state_dict.get(key)
        if isinstance(count, torch.Tensor) and count.dim() == 0 and self.count.dim() > 0:
            state_dict[key] = count.expand(self.count.shape).clone()
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @property
    def std(self) -> torch.Tensor:
        return torch.sqrt(self.var + 1e-8)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """``(x - mean) / std`` clipped, in ``x``'s dtype; 0 at padding (see ``real``)."""
        out = ((x - self.mean.to(x.dtype)) / self.std.to(x.dtype)).clamp(-self.clip, self.clip)
        return out if self.real is None else torch.where(self.real, out, 0.0)

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
        self.returns.mul_(self.gamma).add_(reward)  # in place: a compiled step mutates it
        self.stats.update(self.returns, alive)
        self.returns.masked_fill_(ended, 0.0)
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
