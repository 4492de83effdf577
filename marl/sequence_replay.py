"""Sequence replay for recurrent Q-agents: chunks aligned to episodes, burn-in, n-step targets.

R2D2's replay (Kapturowski et al. 2019, "Recurrent Experience Replay in Distributed
Reinforcement Learning", ICLR): the learner trains on sequences of ``seq_len`` steps and
rebuilds each sequence's starting hidden state by running the network over the
``burn_in`` steps before it without learning from them. Here the starting state of that
warm-up is zero, so a sequence that starts at its episode's first step needs none.

:class:`SequenceReplayBuffer` is a :class:`~marl.replay.ReplayBuffer` that also stores,
per slot, every agent's episode-start flag ``first: [C, E, A]`` (what the acting hidden
state was zeroed on) and each copy's step within its episode ``episode_step: [C, E]``.
A sequence starts at a stored slot whose ``episode_step`` is a multiple of ``seq_len``
(chunks tile every episode from its start) and whose warm-up, ``min(burn_in,
episode_step)`` steps back, is still stored. :meth:`SequenceReplayBuffer.sample_sequences`
reads a window of ``burn_in + seq_len + n_step - 1`` slots around each start:

- the warm-up steps only move the hidden state; window steps before the warm-up (another
  episode, or slots never written or overwritten) count as dead, so the state stays zero;
- a sequence step counts (``valid``) while it is stored and in the start's episode:
  steps after the episode's end and after the newest slot are padding, masked out;
- every sequence step gets its n-step window exactly as :meth:`ReplayBuffer.sample` gives
  a transition one (agents' windows and the team's, cut at episode ends and at the newest
  slot), and the index of the step whose state and ``final_obs`` bootstrap it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import torch

from marl.replay import GroupTransition, ReplayBuffer
from marl.returns import n_step_window

DEFAULT_SEQ_LEN = 32
"""Sequence length when ``algo.seq_len`` is None."""


class GroupSequence(NamedTuple):
    """A group's part of a batch of ``B`` sequences of ``L`` steps.

    The window holds ``W = burn_in + L + n_step - 1`` steps: ``burn_in`` warm-up steps,
    the ``L`` sequence steps, then the steps the last n-step windows reach into.
    Indices into "the unroll" count from the first sequence step (``0 .. L + n_step - 2``).

    Attributes:
        obs: ``[W, B, A, F]`` raw observations of the window.
        first: ``[W, B, A]`` bool, agents' first steps of an episode (where states reset).
        window_alive: ``[W, B, A]`` bool, agents alive at each window step; False before
            the warm-up, where the state must stay zero.
        action: ``[L, B, A]`` actions of the sequence steps.
        alive: ``[L, B, A]`` agents alive at a valid sequence step (the agents' loss mask).
        reward, discount: ``[L, B, A]`` each agent's n-step reward and bootstrap factor.
        next_obs: ``[L, B, A, F]`` the final observation at the end of the agent's window.
        next_index: ``[L, B, A]`` int64, the unroll step that ``next_obs`` followed.
        next_alive: ``[L, B, A]`` agents of ``alive`` not terminated in the team's window.
        team_next_obs: ``[L, B, A, F]`` final observations at the end of the team's window.
    """

    obs: torch.Tensor
    first: torch.Tensor
    window_alive: torch.Tensor
    action: torch.Tensor
    alive: torch.Tensor
    reward: torch.Tensor
    discount: torch.Tensor
    next_obs: torch.Tensor
    next_index: torch.Tensor
    next_alive: torch.Tensor
    team_next_obs: torch.Tensor


class SequenceSample(NamedTuple):
    """A batch of ``B`` sequences of ``L`` steps (see :class:`GroupSequence`).

    Attributes:
        groups: per group :class:`GroupSequence`.
        valid: ``[L, B]`` bool, sequence steps stored and in the start's episode.
        team_reward, team_discount: ``[L, B]`` the team's n-step reward and factor.
        team_index: ``[L, B]`` int64, the unroll step the team's window ends at.
        state, next_state: ``[L, B, S]`` global state at each step and at the end of the
            team's window, or None when none is stored.
        burn_in: warm-up steps at the start of the window.
    """

    groups: dict[str, GroupSequence]
    valid: torch.Tensor
    team_reward: torch.Tensor
    team_discount: torch.Tensor
    team_index: torch.Tensor
    state: torch.Tensor | None
    next_state: torch.Tensor | None
    burn_in: int


class SequenceReplayBuffer(ReplayBuffer):
    """A :class:`ReplayBuffer` that also stores episode starts, for sequence sampling.

    Arguments as for :class:`ReplayBuffer`.
    """

    def __init__(self, capacity: int, num_envs: int,
                 layout: Mapping[str, tuple[int, int, tuple[int, ...], torch.dtype]],
                 state_features: int | None, device: torch.device) -> None:
        super().__init__(capacity, num_envs, layout, state_features, device)
        self.first = {name: torch.zeros(capacity, num_envs, agents, dtype=torch.bool,
                                        device=device)
                      for name, (agents, *_) in layout.items()}
        self.episode_step = torch.zeros(capacity, num_envs, dtype=torch.int64, device=device)
        self._next_episode_step = torch.zeros(num_envs, dtype=torch.int64, device=device)

    def add(self, groups: Mapping[str, GroupTransition], env_done: torch.Tensor,
            state: torch.Tensor | None = None, final_state: torch.Tensor | None = None,
            first: Mapping[str, torch.Tensor] | None = None) -> None:
        """:meth:`ReplayBuffer.add`, plus ``first``: per group ``[E, A]`` bool, the agents
        whose first step of an episode this is (:meth:`marl.memory.AgentMemory.first`)."""
        if first is None or set(first) != set(self.first):
            raise ValueError(f"a sequence buffer stores episode starts: add() needs first for "
                             f"groups {sorted(self.first)}, got "
                             f"{None if first is None else sorted(first)}")
        for name, value in first.items():
            self.first[name][self.pos] = value
        self.episode_step[self.pos] = self._next_episode_step
        self._next_episode_step = torch.where(env_done, 0, self._next_episode_step + 1)
        super().add(groups, env_done, state, final_state)

    def end_episodes(self) -> None:
        """Every copy starts a new episode next (a resume): the newest stored step ends the
        episodes in flight (as a truncation) and the next step is step 0 of its episode."""
        if self.size:
            newest = (self.pos - 1) % self.capacity
            self.team_truncated[newest] = ~self.team_terminated[newest]
        self._next_episode_step.zero_()

    def chunk_starts(self, seq_len: int, burn_in: int) -> torch.Tensor:
        """``[C, E]`` bool: slots a sequence may start at (aligned, warm-up stored)."""
        slots = torch.arange(self.capacity, device=self.device)
        age = ((self.pos - 1 - slots) % self.capacity).unsqueeze(1)  # 0 for the newest slot
        warm_up = self.episode_step.clamp(max=burn_in)
        # Slots never written have age >= size, so this also keeps the start stored.
        return (self.episode_step % seq_len == 0) & (age + warm_up < self.size)

    def sample_sequences(self, num_sequences: int, seq_len: int, burn_in: int, n_step: int,
                         gamma: float, generator: torch.Generator | None = None
                         ) -> SequenceSample:
        """Draw ``num_sequences`` sequence starts uniformly among :meth:`chunk_starts`.

        Raises:
            ValueError: if no slot can start a sequence (an empty buffer).
        """
        starts = self.chunk_starts(seq_len, burn_in).flatten().nonzero().squeeze(1)
        if starts.numel() == 0:
            raise ValueError("no stored sequence start in the replay buffer; collect steps "
                             "first")
        draw = torch.randint(0, starts.numel(), (num_sequences,), device=self.device,
                             generator=generator)
        slot, env = starts[draw] // self.num_envs, starts[draw] % self.num_envs
        offsets = torch.arange(-burn_in, seq_len + n_step - 1, device=self.device)
        window = (slot.unsqueeze(0) + offsets.unsqueeze(1)) % self.capacity  # [W, B]
        age = (self.pos - 1 - slot) % self.capacity  # [B] steps from the start to the newest
        warm_up = self.episode_step[slot, env].clamp(max=burn_in)
        used = ((offsets.unsqueeze(1) >= -warm_up) & (offsets.unsqueeze(1) <= age)).unsqueeze(-1)
        after = window[burn_in:]  # [P, B]: the sequence and the steps its windows reach
        env_done = (self.team_terminated | self.team_truncated)[after, env]
        ended_before = (env_done.cumsum(0) - env_done.long())[:seq_len] > 0
        valid = (offsets[burn_in:burn_in + seq_len].unsqueeze(1) <= age) & ~ended_before
        steps = torch.arange(seq_len, device=self.device)
        length = (age - steps.unsqueeze(1) + 1).clamp(1, n_step)  # [L, B]
        unfold = _Windows(seq_len, n_step, self.device)
        team = n_step_window(unfold(self.team_reward[after, env]),
                             unfold(self.team_terminated[after, env]),
                             unfold(self.team_truncated[after, env]), gamma, length)
        team_index = steps.unsqueeze(1) + team.last
        groups = {}
        for name, store in self.storage.items():
            groups[name] = self._group_sequence(
                store, self.first[name][window, env], window, env, used, valid, env_done,
                unfold, length, team.last, team_index, burn_in, gamma)
        state = next_state = None
        if self.state is not None and self.final_state is not None:
            state = self.state[after[:seq_len], env]
            next_state = at_steps(self.final_state[after, env], team_index)
        return SequenceSample(groups, valid, team.reward, team.discount, team_index, state,
                              next_state, burn_in)

    def _group_sequence(self, store: GroupTransition, first: torch.Tensor,
                        window: torch.Tensor, env: torch.Tensor, used: torch.Tensor,
                        valid: torch.Tensor, env_done: torch.Tensor, unfold: _Windows,
                        length: torch.Tensor, team_last: torch.Tensor,
                        team_index: torch.Tensor, burn_in: int,
                        gamma: float) -> GroupSequence:
        after = window[burn_in:]
        now = after[:unfold.seq_len]
        terminated = unfold(store.terminated[after, env])  # [n, L, B, A]
        truncated = unfold(store.truncated[after, env] | env_done.unsqueeze(-1))
        agent = n_step_window(unfold(store.reward[after, env]), terminated, truncated, gamma,
                              length.unsqueeze(-1))
        next_index = torch.arange(unfold.seq_len, device=self.device).view(-1, 1, 1) + agent.last
        final_obs = store.final_obs[after, env]  # [P, B, A, F]
        team_agents = team_index.unsqueeze(-1).expand_as(next_index)
        steps = torch.arange(unfold.n_step, device=self.device).view(-1, 1, 1, 1)
        terminated_in_team_window = (terminated & (steps <= team_last.unsqueeze(-1))).any(0)
        alive = store.alive[now, env] & valid.unsqueeze(-1)
        return GroupSequence(
            obs=store.obs[window, env], first=first & used,
            window_alive=store.alive[window, env] & used, action=store.action[now, env],
            alive=alive, reward=agent.reward, discount=agent.discount,
            next_obs=at_steps(final_obs, next_index), next_index=next_index,
            next_alive=alive & ~terminated_in_team_window,
            team_next_obs=at_steps(final_obs, team_agents))

    # -------------------------------------------------------------- checkpoint
    def _fields(self) -> dict[str, torch.Tensor]:
        fields = super()._fields()
        fields.update({f"{name}.first": value for name, value in self.first.items()})
        fields["episode_step"] = self.episode_step
        return fields

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """:meth:`ReplayBuffer.load_state_dict`; the next step starts new episodes."""
        super().load_state_dict(state)
        self.end_episodes()


class _Windows:
    """``x: [P, B, ...] -> [n, L, B, ...]``: row ``k`` of column ``t`` is ``x[t + k]``, the
    n-step window of each of the ``L`` sequence steps."""

    def __init__(self, seq_len: int, n_step: int, device: torch.device) -> None:
        self.seq_len, self.n_step = seq_len, n_step
        self.index = (torch.arange(n_step, device=device).unsqueeze(1)
                      + torch.arange(seq_len, device=device).unsqueeze(0))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return x[self.index]


def at_steps(values: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``values: [P, *B, D]`` at time steps ``index: [L, *B]`` -> ``[L, *B, D]``."""
    return values.gather(0, index.unsqueeze(-1).expand(*index.shape, values.shape[-1]))
