"""What the off-policy family shares: collection into replay, the update loop, targets.

:class:`OffPolicy` steps every env copy ``num_steps`` times with exploring actions into a
:class:`~marl.replay.ReplayBuffer` (:meth:`OffPolicy.collect`), then takes
``gradient_steps`` updates, each on one sampled batch: the subclass's ``losses`` (every
group's Q networks, mixers, actors and critics) are summed, back-propagated once and
stepped by the common optimiser, and the target networks move
(:meth:`OffPolicy.update`). Observations are stored raw and normalised with the current
running statistics when used, so old transitions never carry stale statistics.

With recurrent agents (``groups.rnn=gru``, IQL/VDN/QMIX) the learner keeps the hidden
state of every training copy in an :class:`~marl.memory.AgentMemory`, carried from one
``collect`` call to the next and reset with the env, and learns from sequences of a
:class:`~marl.sequence_replay.SequenceReplayBuffer` (:meth:`OffPolicy.sequence_losses`).

Subclasses: :class:`marl.algos.q_learning.QLearning` (IQL, VDN, QMIX) and
:class:`marl.algos.ddpg.DDPG` (MADDPG, MATD3).
"""

from __future__ import annotations

import math
from typing import Any

import gymnasium
import torch
from marl_envs.core import BatchedEnv, BatchedReset
from torch import nn

from marl.algos.base import NonFiniteLossError
from marl.algos.compiled import compile_plan
from marl.config import Config, ConfigError
from marl.groups import discrete_start, feature_mask
from marl.logging import EpisodeTracker
from marl.memory import AgentMemory
from marl.normalize import RunningMeanStd
from marl.optim import CommonOptimizer
from marl.replay import GroupTransition, ReplayBuffer, Sample
from marl.sequence_replay import DEFAULT_SEQ_LEN, SequenceReplayBuffer, SequenceSample
from marl.targets import update_targets


class OffPolicy:
    """Replay, exploration and the update loop for one off-policy algorithm.

    Subclasses build their networks, then call :meth:`_finish_init` with the online
    modules the optimiser steps, and implement :meth:`act`, :meth:`losses`,
    :meth:`target_pairs` and :meth:`modules`; those that train recurrent agents also
    :meth:`act_recurrent`, :meth:`sequence_losses` and :meth:`new_memory`.

    Args:
        env: the batched env (its specs decide the groups).
        config: the experiment config.
        device: where networks and the replay buffer live.
    """

    optimizer: CommonOptimizer
    samples_actions = False  # greedy Q values, actors without exploration noise
    compiled_collect: Any = None  # a compiled collection (marl.algos.compiled), if any
    compiled_update: Any = None  # the update as one graph (marl.algos.compiled), if any

    def __init__(self, env: BatchedEnv, config: Config, device: torch.device) -> None:
        self.env = env
        self.config = config
        self.algo = config.algo
        self.device = device
        _check_config(config)
        self.specs = env.groups
        self.obs_features = {name: math.prod(spec.obs_shape) for name, spec in env.groups.items()}
        self.num_agents = {name: spec.num_agents for name, spec in env.groups.items()}
        self.state_features = (math.prod(env.state_shape) if env.state_shape is not None
                               else None)
        self.sharing = {name: config.groups.sharing_of(name)
                        for name in env.groups}
        obs_norm = config.algo.obs_norm
        self.obs_norm = nn.ModuleDict(
            {name: RunningMeanStd((self.obs_features[name],), real=feature_mask(spec))
             for name, spec in env.groups.items()} if obs_norm else {})
        self.state_norm = nn.ModuleDict(
            {"state": RunningMeanStd((self.state_features,))}
            if obs_norm and self.state_features else {})
        self.obs_norm.to(device)
        self.state_norm.to(device)
        capacity = max(config.algo.buffer_size // env.num_envs, 2)
        self.recurrent = config.groups.rnn == "gru"
        buffer = SequenceReplayBuffer if self.recurrent else ReplayBuffer
        self.replay = buffer(capacity, env.num_envs, self._replay_layout(),
                             self.state_features, device)
        # The same buffer, typed for the sequence calls (None for feed-forward agents).
        self.sequences = self.replay if isinstance(self.replay, SequenceReplayBuffer) else None
        self.env_steps = 0
        self.num_updates = 0
        self.next: BatchedReset | None = None
        # train.compile: learners with a compiled path compile where this says None.
        self.eager_reason = compile_plan(config, env)
        self._drawn = self.drawn_losses  # the compiled graph of it, where one runs
        self._pos = torch.zeros((), dtype=torch.int64, device=device)

    def _replay_layout(self) -> dict[str, tuple[int, int, tuple[int, ...], torch.dtype]]:
        layout: dict[str, tuple[int, int, tuple[int, ...], torch.dtype]] = {}
        for name, spec in self.specs.items():
            space = spec.action_space
            if isinstance(space, gymnasium.spaces.Discrete):
                layout[name] = (spec.num_agents, self.obs_features[name], (), torch.int64)
            else:
                layout[name] = (spec.num_agents, self.obs_features[name],
                                (math.prod(space.shape or (1,)),), torch.float32)
        return layout

    def _finish_init(self, trained: dict[str, nn.Module]) -> None:
        """Move networks to the device and build the common optimiser over ``trained``."""
        for module in self.modules().values():
            module.to(self.device)
        self.optimizer = CommonOptimizer(trained, self.config.optim)
        self.memory = self.new_memory(self.env.num_envs)  # the training copies' states

    # --------------------------------------------------------------- interface
    def act(self, obs: dict[str, torch.Tensor], masks: dict[str, torch.Tensor | None],
            explore: bool) -> dict[str, torch.Tensor]:
        """Actions as stored in replay, per group ``[E, A]`` or ``[E, A, D]``."""
        raise NotImplementedError

    def act_recurrent(self, obs: dict[str, torch.Tensor], masks: dict[str, torch.Tensor | None],
                      explore: bool, memory: AgentMemory, first: dict[str, torch.Tensor],
                      alive: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """:meth:`act` for recurrent agents, from ``memory``'s hidden states, which it
        advances by one step (``first``, ``alive``: per group ``[E, A]`` bool)."""
        raise NotImplementedError(f"{type(self).__name__} trains feed-forward agents only")

    def env_action(self, name: str, action: torch.Tensor) -> torch.Tensor:
        """Group ``name``'s stored actions (indices ``0..n-1``) as the env takes them:
        shifted by the ``Discrete`` space's start."""
        start = discrete_start(self.specs[name].action_space)
        return action + start if start else action

    def losses(self, sample: Sample) -> dict[str, torch.Tensor]:
        """Named loss terms of one update; ``"loss"`` is what the optimiser minimises."""
        raise NotImplementedError

    def sequence_losses(self, sample: SequenceSample) -> dict[str, torch.Tensor]:
        """:meth:`losses` of recurrent agents, on sampled sequences."""
        raise NotImplementedError(f"{type(self).__name__} trains feed-forward agents only")

    def target_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        """Every ``(online, target)`` pair of modules."""
        raise NotImplementedError

    def soft_targets_due(self) -> bool:
        """Whether soft targets move after the update just taken (every update here)."""
        return True

    def modules(self) -> dict[str, nn.Module]:
        """Everything with state to checkpoint."""
        raise NotImplementedError

    # ------------------------------------------------------------ observations
    @staticmethod
    def _stats(modules: nn.ModuleDict, name: str) -> RunningMeanStd:
        stats = modules[name]
        assert isinstance(stats, RunningMeanStd)
        return stats

    def normalize_obs(self, name: str, obs: torch.Tensor) -> torch.Tensor:
        """Running-normalised ``obs: [*B, A, F]`` (unchanged without ``algo.obs_norm``)."""
        return self._stats(self.obs_norm, name).normalize(obs) if name in self.obs_norm else obs

    def global_state(self, state: torch.Tensor | None,
                     obs: dict[str, torch.Tensor]) -> torch.Tensor:
        """The mixer's or centralised critic's input ``[B, S]``.

        ``env.state()`` (normalised) when the task has one, else every group's
        normalised observations ``obs[g]: [B, A_g, F_g]`` concatenated.
        """
        if state is not None:
            if not self.state_norm:
                return state
            return self._stats(self.state_norm, "state").normalize(state)
        return torch.cat([value.flatten(-2) for value in obs.values()], dim=-1)

    def global_state_features(self) -> int:
        if self.state_features is not None:
            return self.state_features
        return sum(self.num_agents[n] * self.obs_features[n] for n in self.specs)

    def policy_actions(self, current: BatchedReset, explore: bool, update_stats: bool = False,
                       memory: AgentMemory | None = None
                       ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor],
                                  dict[str, torch.Tensor]]:
        """Stored-form and env-form actions for the observations in ``current``, and the
        agents' episode starts ``first`` (per group ``[E, A]`` bool; empty unless
        ``memory`` is recurrent: then the actions come from its hidden states, advanced by
        this step)."""
        obs, masks = {}, {}
        for name, group_obs in current.groups.items():
            flat = group_obs.obs.to(self.device).reshape(
                *group_obs.obs.shape[:2], self.obs_features[name]).float()
            if update_stats and name in self.obs_norm:
                self._stats(self.obs_norm, name).update(flat, group_obs.alive.to(self.device))
            obs[name] = self.normalize_obs(name, flat)
            mask = group_obs.action_mask
            masks[name] = None if mask is None else mask.to(self.device)
        first: dict[str, torch.Tensor] = {}
        if memory is not None and memory.recurrent:
            first = memory.first(current)
            alive = {name: group_obs.alive.to(self.device)
                     for name, group_obs in current.groups.items()}
            actions = self.act_recurrent(obs, masks, explore, memory, first, alive)
        else:
            actions = self.act(obs, masks, explore)
        env_actions = {name: self.env_action(name, action).to(self.env.device)
                       for name, action in actions.items()}
        return actions, env_actions, first

    def new_memory(self, num_envs: int) -> AgentMemory:
        """Fresh hidden states for ``num_envs`` copies; empty here (feed-forward agents),
        learners with recurrent agents override it."""
        return AgentMemory({}, num_envs, self.device)

    def eval_actions(self, current: BatchedReset, sample: bool,
                     memory: AgentMemory) -> dict[str, torch.Tensor]:
        """Env-form evaluation actions: greedy Q values or actors without noise
        (``sample`` has no effect here); recurrent agents act from ``memory``."""
        return self.policy_actions(current, explore=False, memory=memory)[1]

    # ----------------------------------------------------------------- rollout
    @torch.no_grad()
    def collect(self, tracker: EpisodeTracker) -> int:
        """Step every env copy ``num_steps`` times into replay; return env steps taken.

        Recurrent agents act from :attr:`memory`, whose hidden states carry over to the
        next call."""
        if self.compiled_collect is not None:
            return self.compiled_collect.collect(tracker)
        if self.next is None:
            self.next = self.env.reset(seed=self.config.seed)
        current = self.next
        for _ in range(self.algo.num_steps):
            actions, env_actions, first = self.policy_actions(
                current, explore=True, update_stats=True, memory=self.memory)
            state = self._raw_state(current.state)
            if state is not None and self.state_norm:
                self._stats(self.state_norm, "state").update(state)
            step = self.env.step(env_actions)
            self.memory.observe(step)
            transitions = {}
            alive = {}
            for name, group_step in step.groups.items():
                before = current.groups[name]
                alive[name] = before.alive.to(self.device)
                transitions[name] = GroupTransition(
                    obs=self._flat_obs(name, before.obs), action=actions[name],
                    reward=group_step.reward.to(self.device),
                    terminated=group_step.terminated.to(self.device),
                    truncated=group_step.truncated.to(self.device), alive=alive[name],
                    final_obs=self._flat_obs(name, group_step.final_obs))
            env_done, final_state = step.env_done.to(self.device), self._raw_state(step.final_state)
            if self.sequences is not None:
                self.sequences.add(transitions, env_done, state, final_state, first=first)
            else:
                self.replay.add(transitions, env_done, state, final_state)
            tracker.record(step, alive)
            current = BatchedReset({name: s.next for name, s in step.groups.items()}, step.state)
            self.env_steps += self.env.num_envs
        self.next = current
        return self.algo.num_steps * self.env.num_envs

    def _flat_obs(self, name: str, obs: torch.Tensor) -> torch.Tensor:
        return obs.to(self.device).reshape(*obs.shape[:2], self.obs_features[name]).float()

    def _raw_state(self, state: torch.Tensor | None) -> torch.Tensor | None:
        if self.state_features is None or state is None:
            return None
        return state.to(self.device).reshape(state.shape[0], -1).float()

    # ------------------------------------------------------------------ update
    def update(self, progress: float) -> dict[str, float]:
        """``gradient_steps`` updates once ``warmup_steps`` env steps are stored."""
        if self.replay.num_transitions < self.algo.warmup_steps:
            return {}
        if self.config.optim.anneal_lr:
            self.optimizer.set_lr(self.config.optim.lr * (1.0 - progress))
        sums: dict[str, torch.Tensor] = {}
        counts: dict[str, int] = {}
        for _ in range(self.algo.gradient_steps):
            one_graph = self.compiled_update
            if one_graph is not None and one_graph.ready:
                norms, terms = one_graph.step(*self._draw())
                terms = {**terms, **norms}
            else:  # (eager before the one graph takes over: no compiling)
                terms = self._sampled_losses(eager=one_graph is not None)
                self.optimizer.zero_grad()
                terms["loss"].backward()
                terms.update(self.optimizer.clip_and_step())
                if one_graph is not None and not one_graph.take_over():
                    self.compiled_update = None  # a parameter without a gradient
            self.num_updates += 1
            self._move_targets()
            for key, value in terms.items():  # some terms (delayed actors) skip updates
                sums[key] = sums.get(key, 0) + value.detach()
                counts[key] = counts.get(key, 0) + 1
        metrics = {key: float(value) / counts[key] for key, value in sums.items()}
        bad = sorted(key for key, value in metrics.items() if not math.isfinite(value))
        if bad:
            raise NonFiniteLossError(f"non-finite loss terms {', '.join(bad)}; try a lower "
                                     "optim.lr or optim.max_grad_norm, or algo.obs_norm=true")
        metrics["lr"] = self.optimizer.optimizers[0].param_groups[0]["lr"]
        return metrics

    def return_horizon(self) -> int | None:
        """Steps of the observed team return that ``algo.return_penalty`` compares the
        mixed value to: until ``gamma^H`` falls below 1% (90 steps at gamma 0.95); None
        when the penalty is off."""
        algo = self.algo
        if algo.return_penalty <= 0.0:
            return None
        return max(1, math.ceil(math.log(0.01) / math.log(algo.gamma))) if algo.gamma < 1.0 \
            else self.replay.capacity

    def _sampled_losses(self, eager: bool = False) -> dict[str, torch.Tensor]:
        """The loss terms of one sampled batch: transitions, or for recurrent agents
        ``max(1, batch_size // seq_len)`` sequences of ``seq_len`` steps; ``eager``: not
        through the compiled loss."""
        algo = self.algo
        if self.sequences is None:
            return (self.drawn_losses if eager else self._drawn)(*self._draw())
        seq_len = algo.seq_len or DEFAULT_SEQ_LEN
        sample = self.sequences.sample_sequences(max(1, algo.batch_size // seq_len), seq_len,
                                                 algo.burn_in, algo.n_step, algo.gamma)
        return self.sequence_losses(sample)

    def drawn_losses(self, draw: torch.Tensor, pos: int | torch.Tensor) -> dict[str, torch.Tensor]:
        """:meth:`losses` of the stored transitions ``draw`` (:meth:`ReplayBuffer.draw`)
        read up to the write position ``pos``; compiled with its backward as one graph on
        the compiled path."""
        algo = self.algo
        return self.losses(self.replay.gather(draw, pos, algo.n_step, algo.gamma,
                                              self.return_horizon()))

    def _draw(self) -> tuple[torch.Tensor, torch.Tensor]:
        """A batch of stored transitions to train on, and the write position as a tensor,
        so that one compiled graph serves them all (``fill_`` takes it as a scalar
        argument: no copy, no sync)."""
        self._pos.fill_(self.replay.pos)
        return self.replay.draw(self.algo.batch_size), self._pos

    def drawn_total(self, draw: torch.Tensor, pos: int | torch.Tensor
                    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """:meth:`drawn_losses` as the one-graph update takes it: the loss, and every term
        detached."""
        terms = self.drawn_losses(draw, pos)
        return terms["loss"], {key: value.detach() for key, value in terms.items()}

    def _move_targets(self) -> None:
        """Soft updates when the learner says they are due; hard copies of every target
        after each ``target_update_interval`` updates, decided on the update count alone
        (a delay such as TD3's must not make the count skip past the copies)."""
        if self.algo.target_update == "soft":
            if self.soft_targets_due():
                update_targets(self.target_pairs(), self.algo.tau)
        elif self.num_updates % self.algo.target_update_interval == 0:
            update_targets(self.target_pairs(), 1.0)

    # -------------------------------------------------------------- checkpoint
    def extra_state(self) -> dict[str, Any]:
        """Counters that schedules depend on (epsilon; delayed actor and hard target
        updates). The replay buffer is saved beside the checkpoint, in a file of its own
        (:meth:`marl.replay.ReplayBuffer.state_dict`)."""
        return {"env_steps": self.env_steps, "num_updates": self.num_updates}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.env_steps = int(state["env_steps"])
        self.num_updates = int(state["num_updates"])

    def replay_buffer(self) -> ReplayBuffer:
        """The replay buffer, checkpointed beside the checkpoint (when it fits)."""
        return self.replay

    def reset_env(self, seed: int) -> None:
        """Start new episodes in every copy (after resuming from a checkpoint): hidden
        states restart, and replay ends the episodes that were in flight."""
        self.next = self.env.reset(seed=seed)
        self.memory.reset()
        if self.sequences is not None:
            self.sequences.end_episodes()


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``x`` over the entries where ``mask`` (same shape, bool) is True."""
    return torch.where(mask, x, 0.0).sum() / mask.sum().clamp_min(1)


def _check_config(config: Config) -> None:
    algo = config.algo
    for key in ("buffer_size", "batch_size", "gradient_steps", "n_step",
                "target_update_interval", "policy_delay", "num_steps"):
        if getattr(algo, key) < 1:
            raise ConfigError(f"algo.{key} must be >= 1; got {getattr(algo, key)}")
    if not 0.0 <= algo.tau <= 1.0:
        raise ConfigError(f"algo.tau must be in [0, 1]; got {algo.tau}")
    if algo.buffer_size < 2 * config.env.num_envs:
        raise ConfigError(f"algo.buffer_size={algo.buffer_size} holds fewer than 2 steps of "
                          f"env.num_envs={config.env.num_envs} copies; raise it")
    if config.groups.rnn == "gru":
        # With room for burn_in + seq_len steps per copy, the newest seq_len steps always
        # hold a sequence start whose warm-up is stored.
        steps = algo.burn_in + (algo.seq_len or DEFAULT_SEQ_LEN)
        if algo.buffer_size // config.env.num_envs < steps:
            raise ConfigError(
                f"algo.buffer_size={algo.buffer_size} holds fewer than algo.burn_in + "
                f"algo.seq_len = {steps} steps of each of env.num_envs={config.env.num_envs} "
                f"copies; e.g. algo.buffer_size={steps * config.env.num_envs}")
