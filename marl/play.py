"""Evaluation episodes: greedy (or noise-free) actions, frozen statistics, own RNG streams.

:func:`play_episodes` is the one piece of code that plays evaluation episodes; ``marl eval``
(:func:`marl.evaluate.evaluate`) calls it on a run's checkpoint, and the trainer calls it
through :class:`Evaluator` every ``train.eval_every`` env steps, on env copies of its own.

How a learner acts here: Q methods (IQL, VDN, QMIX) greedily, MADDPG/MATD3 actors
without exploration noise, PPO policies by their most likely action (``mode``) or by
sampling (``sample``). Observation statistics are read, never updated. The episodes run
under RNG streams seeded from ``seed`` and the caller's streams are restored afterwards,
so an evaluation in the middle of training changes nothing of the training that follows.
"""

from __future__ import annotations

import contextlib
import dataclasses
import random
import time
from collections.abc import Iterator
from typing import Protocol

import numpy as np
import torch
from marl_envs.core import BatchedEnv, BatchedReset

from marl.algos.base import Learner
from marl.logging import EpisodeTracker
from marl.memory import AgentMemory

EVAL_SEED_OFFSET = 10_000
"""Evaluation during training resets its env copies with ``seed + EVAL_SEED_OFFSET``."""


def bootstrap_ci(values: list[float], confidence: float = 0.95, resamples: int = 10_000,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of the mean."""
    data = np.asarray(values, dtype=np.float64)
    if data.size < 2:
        return (float(data.mean()), float(data.mean())) if data.size else (float("nan"),) * 2
    rng = np.random.default_rng(seed)
    means = data[rng.integers(0, data.size, (resamples, data.size))].mean(axis=1)
    alpha = (1 - confidence) / 2
    low, high = np.quantile(means, [alpha, 1 - alpha])
    return float(low), float(high)


@dataclasses.dataclass
class EpisodeReturns:
    """What :func:`play_episodes` returns: one entry per episode, in copy order.

    Attributes:
        returns: mean per-agent return of each episode.
        group_returns: per group, the mean return of the group's agents in each episode.
        lengths: env steps of each episode.
    """

    returns: list[float]
    group_returns: dict[str, list[float]]
    lengths: list[float]

    def summary(self, prefix: str = "eval_") -> dict[str, float]:
        """Mean return, its 95% bootstrap CI, per-group means and the mean length."""
        low, high = bootstrap_ci(self.returns)
        out = {f"{prefix}return": float(np.mean(self.returns)),
               f"{prefix}return_ci_low": low, f"{prefix}return_ci_high": high}
        out.update({f"{prefix}return/{name}": float(np.mean(values))
                    for name, values in self.group_returns.items()})
        out[f"{prefix}episode_length"] = float(np.mean(self.lengths))
        return out


@contextlib.contextmanager
def preserved_rng(device: torch.device) -> Iterator[None]:
    """Run a block under its own RNG streams; Python's, NumPy's and torch's (the CPU's and
    ``device``'s) are put back as they were when it ends."""
    python_state, numpy_state = random.getstate(), np.random.get_state()
    devices = [device] if device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices):
            yield
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)


class Actor(Protocol):
    """What :func:`play_episodes` asks of what plays: the acting part of
    :class:`~marl.algos.base.Learner` (every learner is one; so is
    :class:`marl.evaluate.RandomActions`)."""

    device: torch.device

    def new_memory(self, num_envs: int) -> AgentMemory:
        """Fresh recurrent state for ``num_envs`` env copies."""
        ...

    def eval_actions(self, current: BatchedReset, sample: bool,
                     memory: AgentMemory) -> dict[str, torch.Tensor]:
        """Env-form actions ``[E, A(, D)]`` per group, on the env's device."""
        ...


@torch.no_grad()
def play_episodes(algo: Actor, env: BatchedEnv, episodes: int, seed: int,
                  sample: bool = False) -> EpisodeReturns:
    """Play ``episodes`` episodes of ``algo`` in ``env`` (reset with ``seed``).

    Which episodes count is fixed before they start: copy ``e`` of the ``E`` copies counts
    its first ``episodes // E`` episodes, plus one for ``e < episodes % E``. Counting the
    first episodes to finish instead would favour short episodes on tasks whose length
    varies. ``sample`` makes stochastic policies (PPO) sample their actions instead of
    taking the mode (:meth:`marl.algos.base.Learner.eval_actions`).
    """
    num_envs = env.num_envs
    quota = torch.full((num_envs,), episodes // num_envs)
    quota[: episodes % num_envs] += 1
    finished = torch.zeros(num_envs, dtype=torch.long)
    tracker = EpisodeTracker({n: s.num_agents for n, s in env.groups.items()}, num_envs,
                             algo.device, keep_episodes=True)
    with preserved_rng(algo.device):
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)
        current = env.reset(seed=seed)
        memory = algo.new_memory(num_envs)  # recurrent agents: hidden states per episode
        while bool((finished < quota).any()):
            alive = {name: obs.alive.to(algo.device) for name, obs in current.groups.items()}
            step = env.step(algo.eval_actions(current, sample, memory))
            memory.observe(step)
            done = step.env_done.cpu()
            counted = done & (finished < quota)
            finished += done.long()
            # Episodes past their copy's quota are hidden from the tracker: never counted.
            tracker.record(step._replace(env_done=counted.to(step.env_done.device)), alive)
            current = BatchedReset({n: s.next for n, s in step.groups.items()}, step.state)
    names = tracker.names
    return EpisodeReturns(
        returns=[e["episode_return"] for e in tracker.episodes if "episode_return" in e],
        # A group's list holds the episodes it took part in (its key is missing elsewhere).
        group_returns={g: values for g in names
                       if (values := [e[f"episode_return/{g}"] for e in tracker.episodes
                                      if f"episode_return/{g}" in e])},
        lengths=[e["episode_length"] for e in tracker.episodes])


class Evaluator:
    """Evaluation during training, in env copies of its own built once and reused.

    Args:
        env: the evaluation env (never the training env).
        episodes: episodes per evaluation.
        seed: every evaluation resets ``env`` with this seed, so each one plays the same
            starting states and evaluations at different steps compare like with like.
        mode: PPO's ``'mode'`` or ``'sample'`` (see ``train.eval_mode``).
    """

    def __init__(self, env: BatchedEnv, episodes: int, seed: int, mode: str) -> None:
        self.env = env
        self.episodes = episodes
        self.seed = seed
        self.sample = mode == "sample"

    def __call__(self, algo: Learner) -> dict[str, float]:
        """``eval_return``, ``eval_return_ci_low/high``, per-group returns, length, time."""
        start = time.perf_counter()
        result = play_episodes(algo, self.env, self.episodes, self.seed, self.sample)
        return {**result.summary(), "eval_time": time.perf_counter() - start}

    def close(self) -> None:
        self.env.close()
