"""The learner contract: what the trainer, checkpoints and evaluation ask of a learner.

Every algorithm of :data:`marl.algos.registry.ALGORITHMS` builds a class that satisfies
:class:`Learner` (checked by a test for each registered name). It is a
:class:`typing.Protocol`, not a base class: a learner shares code with its family by
whatever means suits it (the off-policy learners subclass
:class:`marl.algos.off_policy.OffPolicy`), and the rest of the code knows only these
members.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch
from marl_envs.core import BatchedEnv, BatchedReset
from torch import nn

from marl.logging import EpisodeTracker
from marl.memory import AgentMemory
from marl.optim import CommonOptimizer
from marl.replay import ReplayBuffer


class NonFiniteLossError(FloatingPointError):
    """A loss became NaN or infinite; the run stops before writing a checkpoint."""


@runtime_checkable
class Learner(Protocol):
    """One learner over all agent groups of a batched env.

    Built as ``Class(env, config, device)``.

    Attributes:
        env: the training env it collects from.
        device: where its networks and storage live.
        optimizer: the optimiser over every trained module (checkpointed).
        samples_actions: whether :meth:`eval_actions` with ``sample=True`` samples from a
            stochastic policy; False when evaluation is greedy (or noise-free) either way.
    """

    env: BatchedEnv
    device: torch.device
    optimizer: CommonOptimizer
    samples_actions: bool

    def collect(self, tracker: EpisodeTracker) -> int:
        """Step the env (recording episodes in ``tracker``); return the env steps taken."""
        ...

    def update(self, progress: float) -> dict[str, float]:
        """Learn from what was collected; ``progress`` in [0, 1) drives schedules.
        Returns the named loss terms and statistics to log (empty when it did not learn)."""
        ...

    def new_memory(self, num_envs: int) -> AgentMemory:
        """Fresh recurrent state for ``num_envs`` env copies at their reset (it holds no
        tensors for feed-forward networks)."""
        ...

    def eval_actions(self, current: BatchedReset, sample: bool,
                     memory: AgentMemory) -> dict[str, torch.Tensor]:
        """Evaluation actions for ``current``, per group in env form ``[E, A(, D)]``, on
        ``env.device``; observation statistics are read, never updated. ``memory`` (from
        :meth:`new_memory`, told of every step by :meth:`AgentMemory.observe`) carries the
        hidden states through each episode and is updated here."""
        ...

    def modules(self) -> dict[str, nn.Module]:
        """Everything with state to checkpoint (networks, normalisers), by name."""
        ...

    def extra_state(self) -> dict[str, Any]:
        """Checkpointed counters beyond :meth:`modules` and the optimiser (may be empty)."""
        ...

    def load_extra_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`extra_state` returned."""
        ...

    def replay_buffer(self) -> ReplayBuffer | None:
        """The replay buffer saved beside each checkpoint in a file of its own, or None
        for learners without one."""
        ...

    def reset_env(self, seed: int) -> None:
        """Start new episodes in every env copy (after resuming from a checkpoint)."""
        ...
