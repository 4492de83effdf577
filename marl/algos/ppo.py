"""IPPO and MAPPO: PPO for every agent group, trained by one optimiser on summed losses.

IPPO's critic sees the agent's own observation (de Witt et al. 2020, arXiv:2011.09533);
MAPPO's sees the global state (Yu et al. 2022, arXiv:2103.01955): ``env.state()`` when
the task has one, else the group's observations concatenated. One iteration is
:meth:`PPO.collect` (a rollout of ``num_steps`` steps of every env copy into
preallocated ``[T, E, A, ...]`` storage) then :meth:`PPO.update` (GAE, then epochs of
minibatch updates on the sum of all groups' PPO losses). A minibatch larger than
``algo.chunk_rows`` agent rows runs as chunks whose gradients accumulate to the
minibatch's: the counts and advantage statistics of the whole minibatch are taken first
(:func:`minibatch_stats`), so each chunk's loss is its share of the minibatch's loss.

Recurrent groups (``groups.rnn=gru``): the policy steps from a hidden state ``[E, A, H]``
carried from rollout to rollout (:class:`~marl.memory.AgentMemory`), and the rollout
stores it at the start of each chunk of ``algo.seq_len`` steps. The update replays each
chunk in time order from its stored state, zeroing it at episode starts inside the chunk;
minibatches take whole chunks (:mod:`marl.algos.rollout`). IPPO's critic reads the
agent's observation and is recurrent too, unrolled after each rollout from its own
carried state; MAPPO's state critic stays feed-forward.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import torch
from marl_envs.core import BatchedEnv, BatchedReset, GroupObs, GroupStep
from torch import nn

from marl.algos.base import NonFiniteLossError
from marl.algos.compiled import CompiledRollout, CompiledUpdate, compile_plan, compiled
from marl.algos.registry import ALGORITHMS
from marl.algos.rollout import (
    Estimates,
    Minibatch,
    Sequences,
    allocate,
    allocate_sequences,
    fold,
    from_sequences,
    take,
    to_sequences,
)
from marl.config import Config
from marl.groups import AgentGroup, Recurrence
from marl.logging import EpisodeTracker
from marl.memory import AgentMemory
from marl.nets import RecurrentGroupNet
from marl.normalize import EpisodeRewardStandardizer, ReturnScaler, RunningMeanStd
from marl.optim import CommonOptimizer
from marl.returns import gae


class PPO:
    """IPPO/MAPPO over all agent groups of a batched env.

    Args:
        env: the batched env (its specs decide the groups).
        config: the experiment config.
        device: where networks and rollout storage live.
    """

    samples_actions = True  # evaluation takes the mode unless asked to sample

    @property
    def compiled_parts(self) -> str:
        """What the compiled path compiles, for the run's config.yaml."""
        if self.compiled_update is None:
            return "the rollout step, the minibatch loss and its backward, the estimates"
        return ("the rollout step, the minibatch update (loss, gradients, clipping and Adam "
                "as one graph where a minibatch runs whole; else its loss and backward), "
                "the estimates")

    def __init__(self, env: BatchedEnv, config: Config, device: torch.device) -> None:
        self.env = env
        self.config = config
        self.algo = config.algo
        self.device = device
        self.centralised = ALGORITHMS[config.algo.name].global_state
        self.use_state = self.centralised and env.state_shape is not None
        # What each critic reads: "obs" (IPPO), "state" or "obs_state" (algo.critic_input).
        self.critic_reads = config.algo.critic_input if self.centralised else "obs"
        state_features = int(torch.Size(env.state_shape or ()).numel()) if self.use_state else 0
        self.groups = nn.ModuleDict()
        for name, spec in env.groups.items():
            obs_features = int(torch.Size(spec.obs_shape).numel())
            critic_features = obs_features
            if self.centralised:
                critic_features = state_features or obs_features * spec.num_agents
            sharing = config.groups.sharing_of(name)
            self.groups[name] = AgentGroup(spec, critic_features, sharing, config,
                                           critic_reads=self.critic_reads)
        self.state_norm = (RunningMeanStd((state_features,))
                           if self.use_state and config.algo.obs_norm else None)
        self.groups.to(device)
        self.optimizer = CommonOptimizer(dict(self.groups.items()), config.optim)
        num_envs, steps = env.num_envs, config.algo.num_steps
        self.reward_norm = nn.ModuleDict({
            name: _reward_normalizer(config, (num_envs, spec.num_agents))
            for name, spec in env.groups.items()
        }).to(device)
        self.storage = {name: allocate(group, steps, num_envs, device)
                        for name, group in self._items()}
        self.seq_len = config.algo.seq_len or steps
        self.sequences = {name: allocate_sequences(group, steps, self.seq_len, num_envs, device)
                          for name, group in self._items()}
        self.memory = self._memory(num_envs, critic=True)
        state_shape = (steps, num_envs, state_features)
        self.state = torch.zeros(state_shape, device=device) if self.use_state else None
        self.final_state = torch.zeros(state_shape, device=device) if self.use_state else None
        self.next: BatchedReset | None = None
        # train.compile: one compiled graph per rollout step, per minibatch loss and for
        # the estimates, where the task and the groups allow (marl.algos.compiled).
        self.eager_reason = compile_plan(config, env)
        on = self.eager_reason is None
        self.compiled_rollout = CompiledRollout(self) if on else None
        self._loss = compiled(self.summed_loss) if on else self.summed_loss
        self._batches = compiled(self._flat_batches) if on else self._flat_batches
        # the whole minibatch update (loss, gradients, clipping, Adam) as one graph
        self.compiled_update = (CompiledUpdate(self.optimizer, self.summed_loss)
                                if on and config.train.compile_update
                                and config.optim.mode == "common" else None)

    def _items(self) -> list[tuple[str, AgentGroup]]:
        return [(name, group) for name, group in self.groups.items()]  # type: ignore[misc]

    # ----------------------------------------------------------------- rollout
    @torch.no_grad()
    def collect(self, tracker: EpisodeTracker) -> int:
        """Step every env copy ``num_steps`` times into storage; return env steps taken."""
        if self.compiled_rollout is not None:
            return self.compiled_rollout.collect(tracker)
        if self.next is None:
            self.next = self.env.reset(seed=self.config.seed)
        current = self.next
        memory = self.memory
        for t in range(self.algo.num_steps):
            actions = {}
            firsts = memory.first(current) if memory.recurrent else {}
            for name, group in self._items():
                store = self.storage[name]
                obs = current.groups[name]
                alive = obs.alive.to(self.device)
                flat = group.prepare_obs(obs.obs.to(self.device), alive, update=True)
                mask = None if obs.action_mask is None else obs.action_mask.to(self.device)
                recurrence = self._step_recurrence(name, t, firsts, alive)
                out = group.act(flat, mask, recurrence=recurrence)
                if out.hidden is not None:
                    memory.set_state(name, "actor", out.hidden)
                store.obs[t] = flat
                store.action[t] = out.action
                store.log_prob[t] = out.log_prob
                store.alive[t] = alive
                if store.action_mask is not None and mask is not None:
                    store.action_mask[t] = mask
                actions[name] = group.env_action(out.action).to(self.env.device)
            if self.state is not None:
                self.state[t] = self._prepare_state(current.state, update=True)
            step = self.env.step(actions)
            memory.observe(step)
            for name, group in self._items():
                self._store_transition(name, group, t, step.groups[name])
            if self.final_state is not None:
                self.final_state[t] = self._prepare_state(step.final_state, update=False)
            tracker.record(step, {name: self.storage[name].alive[t] for name in self.groups})
            current = BatchedReset({name: s.next for name, s in step.groups.items()}, step.state)
        self.next = current
        self._carry_critics()
        return self.algo.num_steps * self.env.num_envs

    def _step_recurrence(self, name: str, t: int, firsts: dict[str, torch.Tensor],
                         alive: torch.Tensor) -> Recurrence | None:
        """The policy's recurrent inputs at rollout step ``t``, storing the episode starts
        and, at a chunk's first step, the state it starts from (``None``: feed-forward)."""
        sequences = self.sequences[name]
        if sequences is None:
            return None
        sequences.first[t] = firsts[name]
        hidden = self.memory.state(name, "actor")
        if t % self.seq_len == 0 and sequences.actor_start is not None:
            sequences.actor_start[t // self.seq_len] = hidden
        return Recurrence(hidden, firsts[name], alive)

    def _carry_critics(self) -> None:
        """Unroll each recurrent critic over the rollout from its carried state: store the
        state at every chunk start and carry the last one to the next rollout (the critic
        does not change while the rollout is collected, so this equals stepping it)."""
        for name, group in self._items():
            sequences = self.sequences[name]
            if sequences is None or sequences.critic_start is None:
                continue
            store = self.storage[name]
            hidden = self.memory.state(name, "critic")
            assert isinstance(group.critic, RecurrentGroupNet)
            _, states = group.critic.unroll(store.obs, hidden, sequences.first, store.alive)
            sequences.critic_start[0] = hidden
            sequences.critic_start[1:] = states[self.seq_len - 1:-1:self.seq_len]
            self.memory.set_state(name, "critic", states[-1])

    def _store_transition(self, name: str, group: AgentGroup, t: int, step: GroupStep) -> None:
        store = self.storage[name]
        reward = step.reward.to(self.device)
        terminated = step.terminated.to(self.device)
        truncated = step.truncated.to(self.device)
        final_obs = step.final_obs.to(self.device)
        store.final_obs[t] = group.prepare_obs(final_obs)
        normalizer = self.reward_norm[name]
        if isinstance(normalizer, ReturnScaler | EpisodeRewardStandardizer):
            reward = normalizer(reward, terminated | truncated, store.alive[t])
        store.reward[t] = reward
        store.terminated[t] = terminated
        store.truncated[t] = truncated

    def _prepare_state(self, state: torch.Tensor | None, update: bool) -> torch.Tensor:
        assert state is not None, "a task that reports state_shape must return states"
        flat = state.to(self.device).reshape(state.shape[0], -1).float()
        if self.state_norm is None:
            return flat
        if update:
            self.state_norm.update(flat)
        return self.state_norm.normalize(flat)

    def critic_input(self, name: str, obs: torch.Tensor,
                     state: torch.Tensor | None) -> torch.Tensor:
        """Critic input ``[*B, A, C]`` from ``obs: [*B, A, F]`` and ``state: [*B, S]``:
        the observation (IPPO), the state (MAPPO) or both (``algo.critic_input=obs_state``,
        ``C = F + S``)."""
        if not self.centralised:
            return obs
        num_agents = obs.shape[-2]
        if state is None:  # no env.state(): the group's observations, concatenated
            state = obs.flatten(-2)
        shared = state.unsqueeze(-2).expand(*state.shape[:-1], num_agents, state.shape[-1])
        return torch.cat([obs, shared], dim=-1) if self.critic_reads == "obs_state" else shared

    # ------------------------------------------------------------------ update
    @torch.no_grad()
    def advantages(self, name: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """GAE over the stored rollout: ``(advantages, returns, values)``, each ``[T, E, A]``.

        Values are computed here in two batched calls rather than once per step: V(s_t)
        on the stored observations and V(s'_t) on the final observations, so truncated
        steps bootstrap from the state they were cut at.
        """
        estimates = self._estimates(name)
        return estimates.advantages, estimates.returns, estimates.values

    @torch.no_grad()
    def _estimates(self, name: str, critic_input: torch.Tensor | None = None) -> Estimates:
        """GAE estimates of group ``name``; ``critic_input``: the stored rollout's critic
        input when the caller has it already (:meth:`critic_input`)."""
        group, store = self.groups[name], self.storage[name]
        assert isinstance(group, AgentGroup)
        sequences = self.sequences[name]
        if sequences is not None and sequences.critic_start is not None:
            seq, num_envs = self.seq_len, self.env.num_envs
            recurrence = Recurrence(sequences.critic_start.flatten(0, 1),
                                    to_sequences(sequences.first, seq),
                                    to_sequences(store.alive, seq))
            here, after = group.predictions_over(to_sequences(store.obs, seq),
                                                 to_sequences(store.final_obs, seq), recurrence)
            prediction = from_sequences(here, num_envs)
            next_values = group.to_return_units(from_sequences(after, num_envs))
        else:
            if critic_input is None:
                critic_input = self.critic_input(name, store.obs, self.state)
            prediction = group.prediction(critic_input)
            next_values = group.value(self.critic_input(name, store.final_obs,
                                                        self.final_state))
        values = group.to_return_units(prediction)
        advantages = gae(store.reward, values, next_values, store.terminated, store.truncated,
                         self.algo.gamma, self.algo.gae_lambda)
        return Estimates(advantages, advantages + values, values, prediction)

    def update(self, progress: float) -> dict[str, float]:
        """Train on the stored rollout; ``progress`` in [0, 1] drives the schedules."""
        algo = self.algo
        if self.config.optim.anneal_lr:
            self.optimizer.set_lr(self.config.optim.lr * (1.0 - progress))
        ent_final = algo.ent_coef if algo.ent_coef_final is None else algo.ent_coef_final
        ent_coef = algo.ent_coef + (ent_final - algo.ent_coef) * progress
        batches = self._batches()
        first = next(iter(batches.values()))
        num_samples = first.obs.shape[0 if first.sequences is None else 1]
        sums: dict[str, torch.Tensor] = {}
        rows: torch.Tensor | int = 0  # the loss terms [groups, terms], summed
        coef = torch.tensor(ent_coef, device=self.device)
        chunks = self.chunk_count(batches, -(-num_samples // algo.num_minibatches))
        for _ in range(algo.update_epochs):
            order = torch.randperm(num_samples, device=self.device)
            for index in order.chunk(algo.num_minibatches):
                one_graph = self.compiled_update if chunks == 1 else None
                if one_graph is not None and one_graph.ready:
                    norms, terms = one_graph.step(batches, index, coef)
                    rows = rows + terms
                else:
                    self.optimizer.zero_grad()
                    if chunks == 1:  # (eager before the one graph takes over: no compiling)
                        loss = self._loss if one_graph is None else self.summed_loss
                        total, terms = loss(batches, index, coef)
                        total.backward()
                        rows = rows + terms
                    else:  # the same gradients, accumulated chunk by chunk
                        stats = {name: minibatch_stats(take(batch, index), algo.norm_adv)
                                 for name, batch in batches.items()}
                        for part in index.chunk(chunks):
                            total, terms = self._loss(batches, part, coef, stats)
                            total.backward()
                            rows = rows + terms
                    norms = self.optimizer.clip_and_step()
                    if one_graph is not None and not one_graph.take_over():
                        self.compiled_update = None  # a parameter without a gradient
                for key, value in norms.items():
                    sums[key] = sums.get(key, 0) + value
        assert isinstance(rows, torch.Tensor)
        sums.update({f"{name}/{key}": rows[g, k] for g, name in enumerate(batches)
                     for k, key in enumerate(LOSS_TERMS)})
        count = algo.update_epochs * algo.num_minibatches
        metrics = {key: float(value) / count for key, value in sums.items()}
        self._check_finite(metrics)
        metrics["ent_coef"] = ent_coef
        metrics["lr"] = self.optimizer.optimizers[0].param_groups[0]["lr"]
        return metrics

    def chunk_count(self, batches: dict[str, Minibatch], samples: int) -> int:
        """How many chunks a minibatch of ``samples`` samples (sequences for recurrent
        groups) runs in under ``algo.chunk_rows``; a count that divides ``samples`` where
        one is near, so that every chunk has one shape (one compiled graph)."""
        limit = self.algo.chunk_rows
        if limit is None:  # measured: a win on one CPU thread, a loss on two (README)
            limit = 4800 if self.device.type == "cpu" and torch.get_num_threads() == 1 else 0
        rows = samples * sum(batch.alive.shape[0] * batch.alive.shape[2]  # [L, N, A]
                             if batch.sequences is not None else batch.alive.shape[1]
                             for batch in batches.values())
        if limit == 0 or rows <= limit:
            return 1
        count = min(math.ceil(rows / limit), samples)
        return next((c for c in range(count, min(2 * count, samples) + 1) if samples % c == 0),
                    count)

    def summed_loss(self, batches: dict[str, Minibatch], index: torch.Tensor,
                    ent_coef: torch.Tensor, stats: dict[str, MinibatchStats] | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The minibatch ``index`` of every group's ``batches``: the PPO losses summed
        over groups, and each group's terms ``[groups, len(LOSS_TERMS)]`` (detached).
        With ``stats`` (those of a whole minibatch that ``index`` is a chunk of), the
        chunk's share of that minibatch's losses and terms. Compiled as one graph, with its
        backward, on the compiled path."""
        algo = self.algo
        total = torch.zeros((), device=index.device)
        rows = []
        for name, batch in batches.items():
            group = self.groups[name]
            assert isinstance(group, AgentGroup)
            terms = ppo_loss(group, take(batch, index), algo.clip_coef, ent_coef,
                             algo.vf_coef, algo.clip_vloss, algo.norm_adv,
                             None if stats is None else stats[name])
            total = total + terms["loss"]
            rows.append(torch.stack([terms[key].detach() for key in LOSS_TERMS]))
        return total, torch.stack(rows)

    def _flat_batches(self) -> dict[str, Minibatch]:
        """Each group's rollout with time and env folded, ``[T*E, A, ...]``, or as
        sequences ``[L, C*E, A, ...]`` for a recurrent group."""
        return {name: self._batch(name) for name in self.storage}

    def _batch(self, name: str) -> Minibatch:
        store, group = self.storage[name], self.groups[name]
        assert isinstance(group, AgentGroup)
        critic_input = self.critic_input(name, store.obs, self.state)
        estimates = self._estimates(name, critic_input)
        if group.value_norm is not None:
            group.value_norm.update(estimates.returns, store.alive)
        sequences = self.sequences[name]
        seq_len = None if sequences is None else self.seq_len
        recurrent = None
        if sequences is not None:
            actor, critic = sequences.actor_start, sequences.critic_start
            recurrent = Sequences(fold(sequences.first, seq_len),
                                  None if actor is None else actor.flatten(0, 1),
                                  None if critic is None else critic.flatten(0, 1))
        mask = store.action_mask
        return Minibatch(
            fold(store.obs, seq_len), fold(critic_input, seq_len), fold(store.action, seq_len),
            fold(store.log_prob, seq_len), fold(estimates.advantages, seq_len),
            fold(estimates.returns, seq_len), fold(estimates.prediction, seq_len),
            fold(store.alive, seq_len), None if mask is None else fold(mask, seq_len),
            recurrent)

    def _check_finite(self, metrics: dict[str, float]) -> None:
        bad = sorted(key for key, value in metrics.items() if not torch.isfinite(
            torch.tensor(value)))
        if bad:
            groups = sorted({key.split("/")[0] for key in bad if "/" in key})
            raise NonFiniteLossError(
                f"non-finite loss terms {', '.join(bad)} (group {', '.join(groups) or '?'}); "
                "try a lower optim.lr, optim.max_grad_norm, or turn on algo.obs_norm"
            )

    def modules(self) -> dict[str, nn.Module]:
        """Everything with state to checkpoint."""
        modules: dict[str, nn.Module] = {"groups": self.groups, "reward_norm": self.reward_norm}
        if self.state_norm is not None:
            modules["state_norm"] = self.state_norm
        return modules

    @torch.no_grad()
    def _memory(self, num_envs: int, critic: bool) -> AgentMemory:
        sizes: dict[str, dict[str, tuple[int, int]]] = {}
        for name, group in self._items():
            nets = {"actor": group.actor_hidden, "critic": group.critic_hidden if critic
                    else None}
            sizes[name] = {net: (group.num_agents, size) for net, size in nets.items()
                           if size is not None}
        return AgentMemory(sizes, num_envs, self.device)

    def new_memory(self, num_envs: int) -> AgentMemory:
        """Fresh policy states for ``num_envs`` copies (empty for feed-forward groups)."""
        return self._memory(num_envs, critic=False)

    @torch.no_grad()
    def eval_actions(self, current: BatchedReset, sample: bool,
                     memory: AgentMemory) -> dict[str, torch.Tensor]:
        """Env-form actions ``[E, A(, D)]``: the policy's mode, or a sample if ``sample``;
        observation statistics are frozen; recurrent policies step from ``memory``."""
        actions = {}
        firsts = memory.first(current) if memory.recurrent else {}
        for name, group in self._items():
            obs = current.groups[name]
            flat = group.prepare_obs(obs.obs.to(self.device))
            mask = None if obs.action_mask is None else obs.action_mask.to(self.device)
            recurrence = None
            if name in firsts:
                recurrence = Recurrence(memory.state(name, "actor"), firsts[name],
                                        obs.alive.to(self.device))
            out = group.act(flat, mask, deterministic=not sample, recurrence=recurrence)
            if out.hidden is not None:
                memory.set_state(name, "actor", out.hidden)
            actions[name] = group.env_action(out.action).to(self.env.device)
        return actions

    def extra_state(self) -> dict[str, Any]:
        """Nothing beyond :meth:`modules` and the optimiser: PPO keeps no counters."""
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        """Nothing to restore (see :meth:`extra_state`)."""

    def replay_buffer(self) -> None:
        """PPO learns from its rollout alone: no replay buffer to checkpoint."""
        return None

    def reset_env(self, seed: int) -> None:
        """Start new episodes in every copy (after resuming from a checkpoint); recurrent
        states start from zero with them."""
        self.next = self.env.reset(seed=seed)
        self.memory.reset()


LOSS_TERMS = ("loss", "policy", "value", "entropy", "approx_kl", "clip_fraction")
"""The named terms of :func:`ppo_loss`, logged as ``<group>/<term>``."""


class MinibatchStats(NamedTuple):
    """What a minibatch's PPO loss averages by: the count of alive agent samples and,
    with advantage normalisation, the advantages' mean and scale over them."""

    alive_count: torch.Tensor
    adv_mean: torch.Tensor
    adv_scale: torch.Tensor


def minibatch_stats(batch: Minibatch, norm_adv: bool) -> MinibatchStats:
    """The :class:`MinibatchStats` of ``batch`` (``adv_mean`` 0 and ``adv_scale`` 1 without
    ``norm_adv``)."""
    alive = batch.alive
    count = alive.sum().clamp_min(1)
    advantage = batch.advantage
    if not norm_adv:
        one = torch.ones((), device=advantage.device)
        return MinibatchStats(count, one - 1, one)
    mean = torch.where(alive, advantage, 0.0).sum() / count
    centred = advantage - mean
    scale = (torch.where(alive, centred**2, 0.0).sum() / count).sqrt() + 1e-8
    return MinibatchStats(count, mean, scale)


def ppo_loss(group: AgentGroup, batch: Minibatch, clip_coef: float,
             ent_coef: float | torch.Tensor, vf_coef: float, clip_vloss: bool,
             norm_adv: bool, stats: MinibatchStats | None = None) -> dict[str, torch.Tensor]:
    """PPO's clipped objective for one group, averaged over alive agents.

    Returns named terms: ``loss`` (what is summed over groups and minimised),
    ``policy``, ``value``, ``entropy``, ``approx_kl`` and ``clip_fraction``. With
    ``stats`` of a larger minibatch that ``batch`` is a chunk of, the sums over ``batch``
    divided by that minibatch's count, its advantages normalised by that minibatch's
    mean and scale: the chunks' terms add up to the minibatch's.
    """
    alive = batch.alive
    if stats is None:
        stats = minibatch_stats(batch, norm_adv)
    count = stats.alive_count

    def mean(x: torch.Tensor) -> torch.Tensor:
        # where, not a product: an overflow in a dead agent's slot must not become NaN.
        return torch.where(alive, x, 0.0).sum() / count

    advantage = batch.advantage
    if norm_adv:
        advantage = (advantage - stats.adv_mean) / stats.adv_scale
    actor_in = critic_in = None
    if batch.sequences is not None:  # replay each sequence from its stored start state
        first, actor_hidden, critic_hidden = batch.sequences
        if actor_hidden is not None:
            actor_in = Recurrence(actor_hidden, first, batch.alive)
        if critic_hidden is not None:
            critic_in = Recurrence(critic_hidden, first, batch.alive)
    dist, prediction = group.policy_and_prediction(batch.obs, batch.critic_input,
                                                   batch.action_mask, actor_in, critic_in)
    log_ratio = dist.log_prob(batch.action) - batch.log_prob
    ratio = log_ratio.exp()
    policy = mean(torch.maximum(-advantage * ratio,
                                -advantage * ratio.clamp(1 - clip_coef, 1 + clip_coef)))
    target, old = batch.returns, batch.old_prediction
    if group.value_norm is not None:  # the critic's units, with the updated statistics
        target = group.value_norm.normalize(target)
    squared_error = (prediction - target) ** 2
    if clip_vloss:  # element-wise max, then the mean (as in the PPO reference code)
        clipped = old + (prediction - old).clamp(-clip_coef, clip_coef)
        squared_error = torch.maximum(squared_error, (clipped - target) ** 2)
    value = 0.5 * mean(squared_error)
    entropy = mean(dist.entropy())
    with torch.no_grad():  # Schulman's k3 estimator, http://joschu.net/blog/kl-approx.html
        approx_kl = mean((ratio - 1) - log_ratio)
        clip_fraction = mean(((ratio - 1).abs() > clip_coef).float())
    return {"loss": policy - ent_coef * entropy + vf_coef * value, "policy": policy,
            "value": value, "entropy": entropy, "approx_kl": approx_kl,
            "clip_fraction": clip_fraction}


def _reward_normalizer(config: Config, batch_shape: tuple[int, int]) -> nn.Module:
    mode = config.algo.reward_norm
    if mode == "running":
        return ReturnScaler(batch_shape, config.algo.gamma)
    if mode == "episode":
        return EpisodeRewardStandardizer(batch_shape)
    return nn.Identity()


__all__ = ["PPO", "GroupObs", "MinibatchStats", "NonFiniteLossError", "minibatch_stats",
           "ppo_loss"]
