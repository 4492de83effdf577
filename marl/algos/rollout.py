"""PPO's rollout storage and minibatches, feed-forward and recurrent.

A rollout is preallocated ``[T, E, A, ...]`` storage per group (:class:`GroupRollout`).
Feed-forward groups train on samples with time and env folded, ``[T*E, A, ...]``
(:class:`Minibatch`, shuffled freely). Recurrent groups train on sequences: the rollout is
cut into ``C = T / L`` chunks of ``L = algo.seq_len`` steps, each replayed from the hidden
state stored at its start (:class:`SequenceStore`), laid out ``[L, C*E, A, ...]`` so that a
minibatch takes whole sequences along axis 1 and never reorders time inside one
(:func:`to_sequences`, :func:`from_sequences`, :func:`take`).
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from marl.groups import AgentGroup


class GroupRollout(NamedTuple):
    """Preallocated rollout storage of one group; every field is ``[T, E, A, ...]``.

    ``obs`` and ``final_obs`` are stored normalised; ``reward`` is stored scaled (when
    reward normalisation is on). ``final_obs[t]`` is the observation transition ``t``
    returned before any auto-reset.
    """

    obs: torch.Tensor
    final_obs: torch.Tensor
    action: torch.Tensor
    log_prob: torch.Tensor
    reward: torch.Tensor
    terminated: torch.Tensor
    truncated: torch.Tensor
    alive: torch.Tensor
    action_mask: torch.Tensor | None


class SequenceStore(NamedTuple):
    """What a recurrent group's rollout keeps besides :class:`GroupRollout`.

    Attributes:
        first: ``[T, E, A]`` bool, the agent's first step of an episode.
        actor_start: ``[C, E, A, H]``, the policy's state before the first step of each
            chunk of ``L`` steps (as it was when the rollout acted).
        critic_start: the same for a recurrent critic, or ``None`` (feed-forward critic).
    """

    first: torch.Tensor
    actor_start: torch.Tensor | None
    critic_start: torch.Tensor | None


class Sequences(NamedTuple):
    """A minibatch's recurrent inputs: ``first: [L, N, A]`` and the states ``[N, A, H]``
    each sequence starts from (``None`` for a feed-forward network)."""

    first: torch.Tensor
    actor_hidden: torch.Tensor | None
    critic_hidden: torch.Tensor | None


class Minibatch(NamedTuple):
    """One group's training samples: ``[N, A, ...]`` (time and env folded, agents kept),
    or ``[L, N, A, ...]`` sequences when ``sequences`` is set.

    ``returns`` are in return units; ``old_prediction`` is the critic's own output when
    the rollout was evaluated (normalised under value normalisation), the centre of
    value clipping: a centre rebuilt from values through statistics that have moved
    since would not be the critic's old prediction.
    """

    obs: torch.Tensor
    critic_input: torch.Tensor
    action: torch.Tensor
    log_prob: torch.Tensor
    advantage: torch.Tensor
    returns: torch.Tensor
    old_prediction: torch.Tensor
    alive: torch.Tensor
    action_mask: torch.Tensor | None
    sequences: Sequences | None = None


class Estimates(NamedTuple):
    """A group's GAE estimates over the stored rollout, each ``[T, E, A]``.

    ``advantages``, ``returns`` and ``values`` are in return units; ``prediction`` is the
    critic's output that ``values`` were de-normalised from.
    """

    advantages: torch.Tensor
    returns: torch.Tensor
    values: torch.Tensor
    prediction: torch.Tensor


def to_sequences(x: torch.Tensor, seq_len: int) -> torch.Tensor:
    """``[T, E, ...] -> [L, C*E, ...]``: chunk ``c`` of copy ``e`` is sequence ``c*E + e``."""
    steps, envs, rest = x.shape[0], x.shape[1], x.shape[2:]
    chunks = steps // seq_len
    return x.reshape(chunks, seq_len, envs, *rest).transpose(0, 1).reshape(
        seq_len, chunks * envs, *rest)


def from_sequences(x: torch.Tensor, num_envs: int) -> torch.Tensor:
    """The inverse of :func:`to_sequences`: ``[L, C*E, ...] -> [T, E, ...]``."""
    seq_len, rows, rest = x.shape[0], x.shape[1], x.shape[2:]
    chunks = rows // num_envs
    return x.reshape(seq_len, chunks, num_envs, *rest).transpose(0, 1).reshape(
        chunks * seq_len, num_envs, *rest)


def fold(x: torch.Tensor, seq_len: int | None) -> torch.Tensor:
    """Training layout of rollout storage ``[T, E, ...]``: samples ``[T*E, ...]``, or
    sequences ``[L, C*E, ...]`` (:func:`to_sequences`) when ``seq_len`` is given."""
    if seq_len is not None:
        return to_sequences(x, seq_len)
    return x.reshape(-1, *x.shape[2:])


def take(batch: Minibatch, index: torch.Tensor) -> Minibatch:
    """The samples ``index`` of ``batch`` (whole sequences along axis 1 for sequences)."""
    sequences = batch.sequences
    if sequences is None:
        def pick(x: torch.Tensor) -> torch.Tensor:
            return x[index]
    else:
        def pick(x: torch.Tensor) -> torch.Tensor:
            return x[:, index]
    mask = None if batch.action_mask is None else pick(batch.action_mask)
    picked = None
    if sequences is not None:
        picked = Sequences(
            pick(sequences.first),
            None if sequences.actor_hidden is None else sequences.actor_hidden[index],
            None if sequences.critic_hidden is None else sequences.critic_hidden[index])
    return Minibatch(pick(batch.obs), pick(batch.critic_input), pick(batch.action),
                     pick(batch.log_prob), pick(batch.advantage), pick(batch.returns),
                     pick(batch.old_prediction), pick(batch.alive), mask, picked)


def allocate(group: AgentGroup, steps: int, num_envs: int,
             device: torch.device) -> GroupRollout:
    """Zeroed :class:`GroupRollout` storage for ``steps`` steps of ``num_envs`` copies."""
    shape = (steps, num_envs, group.num_agents)
    action_shape = shape if group.discrete else (*shape, group.action_dim)

    def zeros(*dims: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return torch.zeros(dims, dtype=dtype, device=device)

    mask = zeros(*shape, group.action_dim, dtype=torch.bool) if group.spec.has_action_mask else None
    return GroupRollout(
        obs=zeros(*shape, group.obs_features), final_obs=zeros(*shape, group.obs_features),
        action=zeros(*action_shape, dtype=torch.int64 if group.discrete else torch.float32),
        log_prob=zeros(*shape), reward=zeros(*shape),
        terminated=zeros(*shape, dtype=torch.bool), truncated=zeros(*shape, dtype=torch.bool),
        alive=zeros(*shape, dtype=torch.bool), action_mask=mask,
    )


def allocate_sequences(group: AgentGroup, steps: int, seq_len: int, num_envs: int,
                       device: torch.device) -> SequenceStore | None:
    """:class:`SequenceStore` for a group with a recurrent network, else ``None``."""
    if group.actor_hidden is None and group.critic_hidden is None:
        return None
    chunks, agents = steps // seq_len, group.num_agents

    def states(size: int | None) -> torch.Tensor | None:
        return None if size is None else torch.zeros(chunks, num_envs, agents, size,
                                                     device=device)

    first = torch.zeros(steps, num_envs, agents, dtype=torch.bool, device=device)
    return SequenceStore(first, states(group.actor_hidden), states(group.critic_hidden))
