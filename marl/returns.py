"""Returns and advantages, with terminations and truncations kept apart.

Conventions: time is the first axis and every tensor has shape ``[T, *B]`` (``*B`` is
any batch shape, typically ``[E, A]``). For step ``t``:

- ``values[t]`` is V(s_t), the value of the observation the action was taken from;
- ``next_values[t]`` is V(s'_t), the value of the observation the transition returned,
  *before* any auto-reset (the env's ``final_obs``), so a truncated step bootstraps from
  the state it was cut at, not from the first state of the next episode;
- ``terminated[t]`` stops the bootstrap (s'_t is terminal, its value is 0);
- ``terminated[t] | truncated[t]`` stops the trace: step ``t+1`` belongs to another
  episode.

Treating truncation as termination biases values towards the time left in the episode
(Pardo et al. 2018, "Time Limits in Reinforcement Learning", arXiv:1712.00378).
"""

from __future__ import annotations

from typing import NamedTuple

import torch


def td_errors(rewards: torch.Tensor, values: torch.Tensor, next_values: torch.Tensor,
              terminated: torch.Tensor, gamma: float) -> torch.Tensor:
    """One-step TD errors ``r + gamma * (1 - terminated) * V(s') - V(s)``, all ``[T, *B]``."""
    return rewards + gamma * (~terminated).to(rewards.dtype) * next_values - values


def gae(rewards: torch.Tensor, values: torch.Tensor, next_values: torch.Tensor,
        terminated: torch.Tensor, truncated: torch.Tensor, gamma: float,
        lam: float) -> torch.Tensor:
    """Generalised advantage estimates (Schulman et al. 2016, arXiv:1506.02438).

    Args:
        rewards, values, next_values: ``[T, *B]`` float.
        terminated, truncated: ``[T, *B]`` bool.

    Returns:
        advantages ``[T, *B]``; the lambda-returns are ``advantages + values``.
    """
    _check_shapes(rewards, values, next_values, terminated, truncated)
    deltas = td_errors(rewards, values, next_values, terminated, gamma)
    carry = (~(terminated | truncated)).to(rewards.dtype) * (gamma * lam)
    advantages = torch.empty_like(deltas)
    running = torch.zeros_like(deltas[0])
    for t in range(deltas.shape[0] - 1, -1, -1):
        running = deltas[t] + carry[t] * running
        advantages[t] = running
    return advantages


def discounted_returns(rewards: torch.Tensor, next_values: torch.Tensor,
                       terminated: torch.Tensor, truncated: torch.Tensor,
                       gamma: float) -> torch.Tensor:
    """Discounted returns to the end of each episode or of the rollout.

    ``G_t = r_t + gamma * (1 - terminated_t) * F_t`` where ``F_t`` is ``G_{t+1}`` inside
    an episode, and ``next_values[t]`` where the episode ends at ``t`` or the rollout
    does. Equal to GAE with ``lam = 1`` plus the values.

    Args:
        rewards, next_values: ``[T, *B]`` float.
        terminated, truncated: ``[T, *B]`` bool.

    Returns:
        returns ``[T, *B]``.
    """
    _check_shapes(rewards, next_values, next_values, terminated, truncated)
    ended = terminated | truncated
    not_terminated = (~terminated).to(rewards.dtype)
    returns = torch.empty_like(rewards)
    follow = next_values[-1]
    for t in range(rewards.shape[0] - 1, -1, -1):
        if t < rewards.shape[0] - 1:
            follow = torch.where(ended[t], next_values[t], returns[t + 1])
        returns[t] = rewards[t] + gamma * not_terminated[t] * follow
    return returns


def n_step_returns(rewards: torch.Tensor, next_values: torch.Tensor,
                   terminated: torch.Tensor, truncated: torch.Tensor, gamma: float,
                   n: int) -> torch.Tensor:
    """n-step returns ``sum_{k<m} gamma^k r_{t+k} + gamma^m (1 - term) V(s'_{t+m-1})``.

    The window of step ``t`` has ``m <= n`` steps: it is cut at the first step that ends
    the episode (a termination bootstraps nothing, a truncation bootstraps the value of
    its final observation) and at the last step of the rollout.

    Args:
        rewards, next_values: ``[T, *B]`` float.
        terminated, truncated: ``[T, *B]`` bool.

    Returns:
        returns ``[T, *B]``.
    """
    if n < 1:
        raise ValueError(f"n-step returns need n >= 1, got n={n}")
    _check_shapes(rewards, next_values, next_values, terminated, truncated)
    horizon = rewards.shape[0]
    returns = torch.zeros_like(rewards)
    collecting = torch.ones_like(rewards)  # 1 while the window of step t is still open
    discount = 1.0
    for k in range(min(n, horizon)):
        # Row i of these slices is step t = i + k, which window t - k = i collects now.
        window_end = (terminated[k:] | truncated[k:]).clone()
        window_end[-1] = True  # t + k reached the end of the rollout
        if k == n - 1:
            window_end[:] = True
        open_now = collecting[: horizon - k]
        bootstrap = gamma * (~terminated[k:]).to(rewards.dtype) * next_values[k:]
        returns[: horizon - k] += open_now * discount * (
            rewards[k:] + window_end.to(rewards.dtype) * bootstrap
        )
        collecting[: horizon - k] = open_now * (~window_end).to(rewards.dtype)
        discount *= gamma
    return returns


class NStepWindow(NamedTuple):
    """The n-step return of the first step of a window, split so a target can be added.

    The full target is ``reward + discount * Q(s'_{last})``; ``discount`` is
    ``gamma^(last + 1)`` where the window ends on a truncation or a cut, and 0 where it
    ends on a termination.

    Attributes:
        reward: ``[*B]`` discounted reward sum over the window.
        discount: ``[*B]`` the factor in front of the bootstrap value.
        last: ``[*B]`` int64 index (within the window) of its last step, whose final
            observation is the one to bootstrap from.
    """

    reward: torch.Tensor
    discount: torch.Tensor
    last: torch.Tensor


def n_step_window(rewards: torch.Tensor, terminated: torch.Tensor, truncated: torch.Tensor,
                  gamma: float, length: torch.Tensor | None = None) -> NStepWindow:
    """The n-step return of step 0 of each window, in closed form (no loop over steps).

    A window holds the ``n`` steps from a sampled step on, ``[n, *B]``. It ends at its
    first terminated or truncated step, at step ``length - 1`` (the newest stored step)
    and at step ``n - 1``. Equal to ``n_step_returns(...)[0]`` with ``next_values``
    given at ``last`` (``tests/test_returns.py`` checks it).

    Args:
        rewards: ``[n, *B]`` float.
        terminated, truncated: ``[n, *B]`` bool.
        gamma: discount factor.
        length: ``[*B]`` int64, steps of the window that exist (``1 <= length``); None
            when all ``n`` do.

    Returns:
        :class:`NStepWindow` with ``[*B]`` fields.
    """
    _check_shapes(rewards, rewards, rewards, terminated, truncated)
    n = rewards.shape[0]
    steps = torch.arange(n, device=rewards.device).view(n, *([1] * (rewards.dim() - 1)))
    ends = terminated | truncated
    ends = ends | (steps == n - 1)
    if length is not None:
        ends = ends | (steps == (length - 1).unsqueeze(0))
    # The first end: argmax returns the first maximal index.
    last = ends.to(torch.int8).argmax(0)
    inside = (steps <= last.unsqueeze(0)).to(rewards.dtype)
    powers = gamma ** steps.to(rewards.dtype)
    reward = (powers * rewards * inside).sum(0)
    terminal = terminated.gather(0, last.unsqueeze(0)).squeeze(0)
    discount = gamma ** (last + 1).to(rewards.dtype) * (~terminal).to(rewards.dtype)
    return NStepWindow(reward, discount, last)


def _check_shapes(*tensors: torch.Tensor) -> None:
    shapes = {tuple(t.shape) for t in tensors}
    if len(shapes) != 1:
        raise ValueError(
            "returns: rewards, values, next_values, terminated and truncated must share one "
            f"shape [T, *B]; got {[tuple(t.shape) for t in tensors]}"
        )
