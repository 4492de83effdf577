"""A fixed-capacity replay buffer of batched multi-agent transitions, with n-step sampling.

Storage is preallocated once, per group ``[C, E, A_g, ...]`` (``C`` time slots of all ``E``
env copies; one slot is one call of ``env.step``) and written as a ring. Keeping the time
axis lets a sample read the ``n`` steps that follow it, so n-step targets are computed at
sampling time for any ``n`` and always from the newest data. ``terminated`` and
``truncated`` are stored apart, and so is ``final_obs`` (the observation a transition
returned before any auto-reset), so targets stop at terminations and bootstrap at
truncations from the state the episode was cut at.

Windows end at the episode's end (``env_done``), at a termination or truncation of the
agent, and at the newest stored slot: a window is never read across the write position.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import torch

from marl.returns import n_step_window


class GroupTransition(NamedTuple):
    """One batched transition of one group, as :meth:`ReplayBuffer.add` takes it.

    Attributes:
        obs: ``[E, A, F]`` flattened raw observations the actions were taken from.
        action: ``[E, A]`` int64 or ``[E, A, D]`` float32.
        reward: ``[E, A]``.
        terminated, truncated, alive: ``[E, A]`` bool.
        final_obs: ``[E, A, F]`` raw observations the transition returned (before reset).
    """

    obs: torch.Tensor
    action: torch.Tensor
    reward: torch.Tensor
    terminated: torch.Tensor
    truncated: torch.Tensor
    alive: torch.Tensor
    final_obs: torch.Tensor


class GroupSample(NamedTuple):
    """A group's part of a sampled batch, ``[B, A, ...]``.

    Attributes:
        obs, action, alive: at the sampled step.
        reward: ``[B, A]`` n-step discounted reward of each agent.
        discount: ``[B, A]`` factor of the agent's bootstrap value (0 after a termination).
        next_obs: ``[B, A, F]`` the final observation at the end of the agent's window.
        next_alive: ``[B, A]`` agents that can still act after the team's window
            (alive at its start and not terminated in it); masks terms of a mixed target.
        team_next_obs: ``[B, A, F]`` every agent's final observation at the end of the
            team's window (what a centralised target needs).
    """

    obs: torch.Tensor
    action: torch.Tensor
    alive: torch.Tensor
    reward: torch.Tensor
    discount: torch.Tensor
    next_obs: torch.Tensor
    next_alive: torch.Tensor
    team_next_obs: torch.Tensor


class Sample(NamedTuple):
    """A sampled batch of ``B`` transitions with n-step targets' ingredients.

    Attributes:
        groups: per group :class:`GroupSample`.
        team_reward: ``[B]`` n-step discounted team reward (mean over the agents alive).
        team_discount: ``[B]`` factor of the team's bootstrap value.
        state, next_state: ``[B, S]`` global state at the sampled step and at the end of
            the team's window, or None when none is stored.
        team_return: ``[B]`` the team's discounted return from the sampled step to its
            episode's end (cut at a truncation, at the newest stored step and after
            ``return_horizon`` steps), or None when not asked for.
    """

    groups: dict[str, GroupSample]
    team_reward: torch.Tensor
    team_discount: torch.Tensor
    state: torch.Tensor | None
    next_state: torch.Tensor | None
    team_return: torch.Tensor | None = None


class ReplayBuffer:
    """Ring buffer of ``capacity`` env steps of ``E`` copies (``capacity * E`` transitions).

    Args:
        capacity: time slots ``C``.
        num_envs: env copies ``E``.
        layout: per group ``(num_agents, obs_features, action_shape, action_dtype)``;
            ``action_shape`` is ``()`` for discrete actions, ``(D,)`` for continuous ones.
        state_features: size of the global state, or None to store none.
        device: where the storage lives.
    """

    def __init__(self, capacity: int, num_envs: int,
                 layout: Mapping[str, tuple[int, int, tuple[int, ...], torch.dtype]],
                 state_features: int | None, device: torch.device) -> None:
        if capacity < 2:
            raise ValueError(
                f"replay capacity must hold at least 2 env steps of every copy; got {capacity} "
                f"slots for {num_envs} env copies. Raise algo.buffer_size to at least "
                f"{2 * num_envs}."
            )
        self.capacity = capacity
        self.num_envs = num_envs
        self.device = device
        self.pos = 0
        self.size = 0

        def zeros(*shape: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
            return torch.zeros((capacity, num_envs, *shape), dtype=dtype, device=device)

        self.storage: dict[str, GroupTransition] = {}
        for name, (agents, features, action_shape, action_dtype) in layout.items():
            self.storage[name] = GroupTransition(
                obs=zeros(agents, features), action=zeros(agents, *action_shape,
                                                          dtype=action_dtype),
                reward=zeros(agents), terminated=zeros(agents, dtype=torch.bool),
                truncated=zeros(agents, dtype=torch.bool), alive=zeros(agents, dtype=torch.bool),
                final_obs=zeros(agents, features),
            )
        self.team_reward = zeros()
        self.team_terminated = zeros(dtype=torch.bool)
        self.team_truncated = zeros(dtype=torch.bool)
        self.state = zeros(state_features) if state_features else None
        self.final_state = zeros(state_features) if state_features else None

    @property
    def num_transitions(self) -> int:
        """Stored transitions, counted per env copy (slots times ``E``)."""
        return self.size * self.num_envs

    def add(self, groups: Mapping[str, GroupTransition], env_done: torch.Tensor,
            state: torch.Tensor | None = None, final_state: torch.Tensor | None = None) -> None:
        """Write one batched step into the next slot, overwriting the oldest when full.

        Args:
            groups: per group :class:`GroupTransition` (``[E, A_g, ...]``).
            env_done: ``[E]`` bool, the copy's episode ended in this step.
            state, final_state: ``[E, S]`` global state before and after the step.
        """
        slot = self.pos
        alive_count = torch.zeros(self.num_envs, device=self.device)
        reward_sum = torch.zeros(self.num_envs, device=self.device)
        any_truncated = torch.zeros(self.num_envs, dtype=torch.bool, device=self.device)
        for name, transition in groups.items():
            store = self.storage[name]
            for field, value in zip(store, transition, strict=True):
                field[slot] = value
            alive = transition.alive
            reward_sum += torch.where(alive, transition.reward, 0.0).sum(-1)
            alive_count += alive.sum(-1)
            any_truncated |= (transition.truncated & alive).any(-1)
        self.team_reward[slot] = reward_sum / alive_count.clamp_min(1.0)
        # The team's episode is cut (not ended) if any of its agents was still running.
        self.team_truncated[slot] = env_done & any_truncated
        self.team_terminated[slot] = env_done & ~any_truncated
        if self.state is not None and self.final_state is not None:
            if state is None or final_state is None:
                raise ValueError("this buffer stores the global state; add() needs state and "
                                 "final_state ([E, S]), got None")
            self.state[slot] = state
            self.final_state[slot] = final_state
        self.pos = (self.pos + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)

    def sample(self, batch_size: int, n_step: int, gamma: float,
               generator: torch.Generator | None = None,
               return_horizon: int | None = None) -> Sample:
        """Draw ``batch_size`` transitions uniformly with their n-step window (and, with
        ``return_horizon``, the team's observed return over at most that many steps):
        :meth:`draw` then :meth:`gather`.

        Raises:
            ValueError: if the buffer is empty.
        """
        return self.gather(self.draw(batch_size, generator), self.pos, n_step, gamma,
                           return_horizon)

    def draw(self, batch_size: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``[batch_size]`` stored transitions drawn uniformly, as flat indices
        ``slot * E + env`` (what :meth:`gather` reads).

        Raises:
            ValueError: if the buffer is empty.
        """
        if self.size == 0:
            raise ValueError("cannot sample from an empty replay buffer; collect steps first")
        # Slots are filled in order from 0 until the buffer is full; then every slot is valid.
        return torch.randint(0, self.size * self.num_envs, (batch_size,), device=self.device,
                             generator=generator)

    def gather(self, draw: torch.Tensor, pos: int | torch.Tensor, n_step: int, gamma: float,
               return_horizon: int | None = None) -> Sample:
        """The transitions ``draw`` (from :meth:`draw`) with their n-step windows, read up
        to the write position ``pos`` (:attr:`pos`; a 0-d int64 tensor lets one compiled
        graph serve every position). A pure function of the storage tensors."""
        slot, env = draw // self.num_envs, draw % self.num_envs
        length = (pos - slot - 1) % self.capacity + 1  # steps from slot to the newest
        offsets = torch.arange(n_step, device=self.device)
        window = (slot.unsqueeze(0) + offsets.unsqueeze(1)) % self.capacity  # [n, B]
        team = n_step_window(self.team_reward[window, env], self.team_terminated[window, env],
                             self.team_truncated[window, env], gamma, length)
        team_slot = (slot + team.last) % self.capacity
        env_done = (self.team_terminated | self.team_truncated)[window, env]
        groups = {name: self._group_sample(store, slot, env, window, length, env_done,
                                           team_slot, team.last, gamma)
                  for name, store in self.storage.items()}
        state = next_state = None
        if self.state is not None and self.final_state is not None:
            state, next_state = self.state[slot, env], self.final_state[team_slot, env]
        team_return = None
        if return_horizon is not None:
            steps = torch.arange(min(return_horizon, self.capacity), device=self.device)
            span = (slot.unsqueeze(0) + steps.unsqueeze(1)) % self.capacity  # [H, B]
            done = self.team_terminated[span, env] | self.team_truncated[span, env]
            team_return = n_step_window(self.team_reward[span, env], done,
                                        torch.zeros_like(done), gamma, length).reward
        return Sample(groups, team.reward, team.discount, state, next_state, team_return)

    def _group_sample(self, store: GroupTransition, slot: torch.Tensor, env: torch.Tensor,
                      window: torch.Tensor, length: torch.Tensor, env_done: torch.Tensor,
                      team_slot: torch.Tensor, team_last: torch.Tensor,
                      gamma: float) -> GroupSample:
        num_agents = store.reward.shape[-1]
        agents = torch.arange(num_agents, device=self.device)
        env_col = env.unsqueeze(-1)
        terminated = store.terminated[window, env]  # [n, B, A]
        truncated = store.truncated[window, env] | env_done.unsqueeze(-1)
        agent = n_step_window(store.reward[window, env], terminated, truncated, gamma,
                              length.unsqueeze(-1))
        agent_slot = (slot.unsqueeze(-1) + agent.last) % self.capacity  # [B, A]
        steps = torch.arange(window.shape[0], device=self.device).view(-1, 1, 1)
        terminated_in_team_window = (terminated & (steps <= team_last.view(1, -1, 1))).any(0)
        alive = store.alive[slot, env]
        return GroupSample(
            obs=store.obs[slot, env], action=store.action[slot, env], alive=alive,
            reward=agent.reward, discount=agent.discount,
            next_obs=store.final_obs[agent_slot, env_col, agents],
            next_alive=alive & ~terminated_in_team_window,
            team_next_obs=store.final_obs[team_slot, env],
        )

    # -------------------------------------------------------------- checkpoint
    def _fields(self) -> dict[str, torch.Tensor]:
        """Every storage tensor ``[C, E, ...]`` by a flat name."""
        fields = {f"{name}.{field}": value for name, store in self.storage.items()
                  for field, value in store._asdict().items()}
        fields.update(team_reward=self.team_reward, team_terminated=self.team_terminated,
                      team_truncated=self.team_truncated)
        if self.state is not None and self.final_state is not None:
            fields.update(state=self.state, final_state=self.final_state)
        return fields

    def nbytes(self) -> int:
        """Bytes of the filled part of the storage (what :meth:`state_dict` holds)."""
        return sum(value[0].nbytes for value in self._fields().values()) * self.size

    def state_dict(self) -> dict[str, Any]:
        """The filled slots ``[size, E, ...]`` of every tensor (on the CPU) and the position.

        Slots fill from 0 until the buffer is full, so ``[:size]`` is exactly what is stored.
        """
        # clone: a saved view would carry the whole preallocated storage into the file.
        fields = {key: value[:self.size].to("cpu", copy=True)
                  for key, value in self._fields().items()}
        return {"capacity": self.capacity, "num_envs": self.num_envs, "pos": self.pos,
                "size": self.size, "fields": fields}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`'s output and end the episodes that were in flight.

        A resumed run starts new episodes in every env copy, so the newest stored step is
        marked as a truncation of every copy whose episode had not ended: n-step windows
        stop there and bootstrap from its ``final_obs``, instead of running into the
        episodes that follow the resume.

        Raises:
            ValueError: the saved buffer has another capacity, env count or layout (the
                buffer is left empty then).
        """
        mine = self._fields()
        saved = state["fields"]
        size = int(state["size"])
        if (int(state["capacity"]), int(state["num_envs"])) != (self.capacity, self.num_envs):
            raise ValueError(f"saved buffer holds {state['capacity']} slots of "
                             f"{state['num_envs']} env copies, this run's "
                             f"{self.capacity} of {self.num_envs}")
        if not 0 <= size <= self.capacity or not 0 <= int(state["pos"]) < self.capacity:
            raise ValueError(f"saved buffer position {state['pos']} or size {size} is out of "
                             f"range for {self.capacity} slots")
        for key, value in mine.items():
            other = saved.get(key)
            if other is None or other.shape[1:] != value.shape[1:] or other.dtype != value.dtype:
                shape = None if other is None else (tuple(other.shape[1:]), other.dtype)
                raise ValueError(f"saved buffer field {key} is {shape}, this run's is "
                                 f"{(tuple(value.shape[1:]), value.dtype)}")
            if other.shape[0] != size:
                raise ValueError(f"saved buffer field {key} holds {other.shape[0]} slots, "
                                 f"its size says {size}")
        for key, value in mine.items():
            value[:size] = saved[key].to(self.device)
        self.size, self.pos = size, int(state["pos"])
        if size:
            newest = (self.pos - 1) % self.capacity
            self.team_truncated[newest] = ~self.team_terminated[newest]
