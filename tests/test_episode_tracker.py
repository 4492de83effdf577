"""EpisodeTracker: team and per-group episode returns, without host syncs while stepping."""

from collections.abc import Callable
from typing import Any

import pytest
import torch
from marl_envs.core import BatchedStep, GroupObs, GroupStep

from marl.logging import EpisodeTracker

CPU = torch.device("cpu")


def _step(rewards: dict[str, list[list[float]]], done: list[bool]) -> BatchedStep:
    """One step of 2 env copies: ``rewards[g][e]`` per agent of group ``g``."""
    groups = {}
    for name, values in rewards.items():
        reward = torch.tensor(values)
        flags = torch.zeros_like(reward, dtype=torch.bool)
        obs = torch.zeros(*reward.shape, 1)
        groups[name] = GroupStep(reward, flags, flags, obs, GroupObs(obs, ~flags, None))
    return BatchedStep(groups, torch.tensor(done), None, None)


def _alive(a: list[list[bool]], b: list[list[bool]]) -> dict[str, torch.Tensor]:
    return {"a": torch.tensor(a), "b": torch.tensor(b)}


def _run(tracker: EpisodeTracker) -> None:
    """Env 0: an episode of 2 steps without group b (a's agents earn 1 and 3 a step),
    then one of 2 steps with both (a's earn 1, b's earns 4). Env 1: one episode of 4
    steps in which only a's first agent takes part (1 a step)."""
    without_b = _alive([[True, True], [True, False]], [[False], [False]])
    with_b = _alive([[True, True], [True, False]], [[True], [False]])
    for t in range(4):
        a_rewards = [[1.0, 3.0] if t < 2 else [1.0, 1.0], [1.0, 0.0]]
        b_rewards = [[0.0] if t < 2 else [4.0], [0.0]]
        tracker.record(_step({"a": a_rewards, "b": b_rewards}, [t in (1, 3), t == 3]),
                       without_b if t < 2 else with_b)


def test_a_group_without_agents_in_an_episode_is_left_out_of_its_mean() -> None:
    tracker = EpisodeTracker({"a": 2, "b": 1}, 2, CPU, keep_episodes=True)
    _run(tracker)
    out = tracker.pop()
    # Episodes: (env 0) a: (2 + 6) / 2 = 4, b absent; (env 0) a: 2, b: 8, team
    # (2 + 2 + 8) / 3 = 4; (env 1) a: 4 (its second agent never took part), b absent.
    assert out["episodes"] == 3
    assert out["episode_return/a"] == pytest.approx((4 + 2 + 4) / 3)
    assert out["episode_return/b"] == pytest.approx(8.0)
    assert out["episode_return"] == pytest.approx(4.0)
    assert out["episode_length"] == pytest.approx((2 + 2 + 4) / 3)
    assert tracker.episodes == [
        {"episode_return": 4.0, "episode_return/a": 4.0, "episode_length": 2.0},
        {"episode_return": 4.0, "episode_return/a": 2.0, "episode_return/b": 8.0,
         "episode_length": 2.0},
        {"episode_return": 4.0, "episode_return/a": 4.0, "episode_length": 4.0},
    ]
    # A window in which b takes no part at all reports no return for b (not 0).
    for _ in range(2):
        tracker.record(_step({"a": [[1.0, 1.0], [1.0, 1.0]], "b": [[0.0], [0.0]]},
                             [False, False]), _alive([[True, True]] * 2, [[False]] * 2))
    tracker.record(_step({"a": [[1.0, 1.0], [1.0, 1.0]], "b": [[0.0], [0.0]]}, [True, True]),
                   _alive([[True, True]] * 2, [[False]] * 2))
    out = tracker.pop()
    assert out == {"episodes": 2, "episode_return": 3.0, "episode_return/a": 3.0,
                   "episode_length": 3.0}
    assert tracker.pop() == {"episodes": 0}


def test_recording_never_syncs_and_pop_syncs_once(monkeypatch: pytest.MonkeyPatch) -> None:
    tracker = EpisodeTracker({"a": 2, "b": 1}, 2, CPU)
    syncs: list[str] = []

    def counting(name: str) -> Callable[..., Any]:
        original = getattr(torch.Tensor, name)

        def wrapper(self: torch.Tensor, *args: Any) -> Any:
            syncs.append(name)
            return original(self, *args)
        return wrapper

    for name in ("tolist", "item", "__bool__", "__float__", "__int__"):
        monkeypatch.setattr(torch.Tensor, name, counting(name))
    _run(tracker)
    assert syncs == []
    tracker.pop()
    assert len(syncs) == 1
