"""Returns and advantages against hand computations."""

import pytest
import torch

from marl.returns import discounted_returns, gae, n_step_returns, n_step_window, td_errors

GAMMA = 0.9


def _rollout() -> dict[str, torch.Tensor]:
    """Five steps: step 1 terminates, step 3 is truncated (time limit).

    values[t] = V(s_t); next_values[t] = V(s'_t) where s'_t is the final observation of
    transition t (so inside an episode next_values[t] == values[t + 1]).
    """
    values = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0])
    next_values = torch.tensor([2.0, 7.0, 4.0, 8.0, 6.0])  # 7: terminal (ignored), 8: cut state
    return {
        "rewards": torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0]),
        "values": values,
        "next_values": next_values,
        "terminated": torch.tensor([False, True, False, False, False]),
        "truncated": torch.tensor([False, False, False, True, False]),
    }


def test_discounted_returns_by_hand() -> None:
    r = _rollout()
    got = discounted_returns(r["rewards"], r["next_values"], r["terminated"], r["truncated"],
                             GAMMA)
    g4 = 5 + GAMMA * 6  # rollout end bootstraps
    g3 = 4 + GAMMA * 8  # truncated: bootstraps from the cut state, not from s_4
    g2 = 3 + GAMMA * g3
    g1 = 2.0  # terminated: no bootstrap
    g0 = 1 + GAMMA * g1
    torch.testing.assert_close(got, torch.tensor([g0, g1, g2, g3, g4]))


def test_gae_by_hand() -> None:
    r = _rollout()
    lam = 0.5
    got = gae(r["rewards"], r["values"], r["next_values"], r["terminated"], r["truncated"],
              GAMMA, lam)
    d = [1 + GAMMA * 2 - 1, 2 - 2, 3 + GAMMA * 4 - 3, 4 + GAMMA * 8 - 4, 5 + GAMMA * 6 - 5]
    a4 = d[4]
    a3 = d[3]  # trace stops at the truncation
    a2 = d[2] + GAMMA * lam * a3
    a1 = d[1]  # and at the termination
    a0 = d[0] + GAMMA * lam * a1
    torch.testing.assert_close(got, torch.tensor([a0, a1, a2, a3, a4]))


def test_gae_lambda_one_equals_discounted_returns() -> None:
    torch.manual_seed(0)
    T, B = 12, 3
    values = torch.randn(T + 1, B)
    terminated = torch.rand(T, B) < 0.15
    truncated = (torch.rand(T, B) < 0.15) & ~terminated
    final = torch.randn(T, B)  # value of the observation at a truncation
    next_values = torch.where(terminated | truncated, final, values[1:])
    rewards = torch.randn(T, B)
    adv = gae(rewards, values[:-1], next_values, terminated, truncated, GAMMA, 1.0)
    ret = discounted_returns(rewards, next_values, terminated, truncated, GAMMA)
    torch.testing.assert_close(adv + values[:-1], ret)


def test_gae_lambda_zero_is_td_error() -> None:
    r = _rollout()
    adv = gae(r["rewards"], r["values"], r["next_values"], r["terminated"], r["truncated"],
              GAMMA, 0.0)
    torch.testing.assert_close(adv, td_errors(r["rewards"], r["values"], r["next_values"],
                                              r["terminated"], GAMMA))


def test_n_step_by_hand_with_termination_and_truncation_in_window() -> None:
    r = _rollout()
    got = n_step_returns(r["rewards"], r["next_values"], r["terminated"], r["truncated"],
                         GAMMA, n=3)
    expected = torch.tensor([
        1 + GAMMA * 2,  # window cut by the termination at step 1
        2.0,
        3 + GAMMA * 4 + GAMMA**2 * 8,  # cut by the truncation at 3: bootstrap from its state
        4 + GAMMA * 8,
        5 + GAMMA * 6,  # rollout end
    ])
    torch.testing.assert_close(got, expected)


def test_n_step_full_window_and_limits() -> None:
    rewards = torch.ones(6)
    next_values = torch.arange(6, dtype=torch.float32) * 10
    flags = torch.zeros(6, dtype=torch.bool)
    got = n_step_returns(rewards, next_values, flags, flags, GAMMA, n=2)
    expected = [1 + GAMMA + GAMMA**2 * next_values[t + 1] for t in range(5)]
    expected.append(1 + GAMMA * next_values[5])
    torch.testing.assert_close(got, torch.tensor(expected))
    one_step = n_step_returns(rewards, next_values, flags, flags, GAMMA, n=1)
    torch.testing.assert_close(one_step, 1 + GAMMA * next_values)
    infinite = n_step_returns(rewards, next_values, flags, flags, GAMMA, n=100)
    torch.testing.assert_close(infinite, discounted_returns(rewards, next_values, flags, flags,
                                                            GAMMA))


def test_batched_axes_are_independent() -> None:
    r = _rollout()
    stacked = {k: torch.stack([v, v.flip(0)], dim=1) for k, v in r.items()}
    got = gae(stacked["rewards"], stacked["values"], stacked["next_values"],
              stacked["terminated"], stacked["truncated"], GAMMA, 0.7)
    alone = gae(r["rewards"], r["values"], r["next_values"], r["terminated"], r["truncated"],
                GAMMA, 0.7)
    torch.testing.assert_close(got[:, 0], alone)


def test_shape_mismatch_is_reported() -> None:
    with pytest.raises(ValueError, match=r"\[T, \*B\]"):
        gae(torch.zeros(3), torch.zeros(4), torch.zeros(3), torch.zeros(3, dtype=torch.bool),
            torch.zeros(3, dtype=torch.bool), GAMMA, 0.9)
    with pytest.raises(ValueError, match="n >= 1"):
        n_step_returns(torch.zeros(3), torch.zeros(3), torch.zeros(3, dtype=torch.bool),
                       torch.zeros(3, dtype=torch.bool), GAMMA, 0)


def _windows(r: dict[str, torch.Tensor], n: int) -> dict[str, torch.Tensor]:
    """Windows [n, T] of every start step t (steps past the rollout padded, then cut)."""
    horizon = r["rewards"].shape[0]
    index = (torch.arange(horizon).unsqueeze(0) + torch.arange(n).unsqueeze(1)).clamp_max(
        horizon - 1)
    out = {key: r[key][index] for key in ("rewards", "terminated", "truncated", "next_values")}
    out["length"] = (horizon - torch.arange(horizon)).clamp_max(n)
    return out


def test_n_step_window_by_hand_with_termination_and_truncation() -> None:
    w = _windows(_rollout(), 3)
    got = n_step_window(w["rewards"], w["terminated"], w["truncated"], GAMMA, w["length"])
    # Windows: t=0 ends at the termination (step 1): no bootstrap. t=2 ends at the
    # truncation (step 3): bootstrap gamma^2 from the cut state. t=4: rollout end.
    torch.testing.assert_close(got.reward, torch.tensor(
        [1 + GAMMA * 2, 2.0, 3 + GAMMA * 4, 4.0, 5.0]))
    torch.testing.assert_close(got.discount, torch.tensor(
        [0.0, 0.0, GAMMA**2, GAMMA, GAMMA]))
    assert got.last.tolist() == [1, 0, 1, 0, 0]


def test_n_step_window_equals_n_step_returns() -> None:
    generator = torch.Generator().manual_seed(0)
    horizon, n = 40, 4
    r = {"rewards": torch.randn(horizon, 3, generator=generator),
         "next_values": torch.randn(horizon, 3, generator=generator),
         "terminated": torch.rand(horizon, 3, generator=generator) < 0.1,
         "truncated": torch.rand(horizon, 3, generator=generator) < 0.1}
    expected = n_step_returns(r["rewards"], r["next_values"], r["terminated"], r["truncated"],
                              GAMMA, n)
    index = (torch.arange(horizon).unsqueeze(0) + torch.arange(n).unsqueeze(1)).clamp_max(
        horizon - 1)
    windows = {key: value[index] for key, value in r.items()}  # [n, T, 3]
    length = (horizon - torch.arange(horizon)).clamp_max(n).unsqueeze(-1).expand(-1, 3)
    got = n_step_window(windows["rewards"], windows["terminated"], windows["truncated"], GAMMA,
                        length)
    bootstrap = windows["next_values"].gather(0, got.last.unsqueeze(0)).squeeze(0)
    torch.testing.assert_close(got.reward + got.discount * bootstrap, expected)
