"""IPPO and MAPPO: PPO for every agent group, trained by one optimiser on summed losses.

IPPO's critic sees the agent's own observation (de Witt et al. 2020, arXiv:2011.09533);
MAPPO's sees the global state (Yu et al. 2022, arXiv:2103.01955): ``env.state()`` when
the task has one, else the group's observations concatenated. One iteration is
:meth:`PPO.collect` (a rollout of ``num_steps`` steps of every env copy into
preallocated ``[T, E, A, ...]`` storage) then :meth:`PPO.update` (GAE, then epochs of
minibatch updates on the sum of all groups' PPO losses).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from marl_envs.core import BatchedEnv, BatchedReset, GroupObs, GroupStep
from torch import nn

from marl.algos.base import NonFiniteLossError
from marl.algos.registry import ALGORITHMS
from marl.config import Config
from marl.groups import AgentGroup
from marl.logging import EpisodeTracker
from marl.memory import AgentMemory
from marl.normalize import EpisodeRewardStandardizer, ReturnScaler, RunningMeanStd
from marl.optim import CommonOptimizer
from marl.returns import gae


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


class Minibatch(NamedTuple):
    """One group's training samples, ``[N, A, ...]`` (time and env folded, agents kept).

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


class Estimates(NamedTuple):
    """A group's GAE estimates over the stored rollout, each ``[T, E, A]``.

    ``advantages``, ``returns`` and ``values`` are in return units; ``prediction`` is the
    critic's output that ``values`` were de-normalised from.
    """

    advantages: torch.Tensor
    returns: torch.Tensor
    values: torch.Tensor
    prediction: torch.Tensor


class PPO:
    """IPPO/MAPPO over all agent groups of a batched env.

    Args:
        env: the batched env (its specs decide the groups).
        config: the experiment config.
        device: where networks and rollout storage live.
    """

    samples_actions = True  # evaluation takes the mode unless asked to sample

    def __init__(self, env: BatchedEnv, config: Config, device: torch.device) -> None:
        self.env = env
        self.config = config
        self.algo = config.algo
        self.device = device
        self.centralised = ALGORITHMS[config.algo.name].global_state
        self.use_state = self.centralised and env.state_shape is not None
        state_features = int(torch.Size(env.state_shape or ()).numel()) if self.use_state else 0
        self.groups = nn.ModuleDict()
        for name, spec in env.groups.items():
            obs_features = int(torch.Size(spec.obs_shape).numel())
            critic_features = obs_features
            if self.centralised:
                critic_features = state_features or obs_features * spec.num_agents
            sharing = config.groups.overrides.get(name, config.groups.sharing)
            self.groups[name] = AgentGroup(spec, critic_features, sharing, config,
                                           critic_on_obs=not self.centralised)
        self.state_norm = (RunningMeanStd((state_features,))
                           if self.use_state and config.algo.obs_norm else None)
        self.groups.to(device)
        self.optimizer = CommonOptimizer(dict(self.groups.items()), config.optim)
        num_envs, steps = env.num_envs, config.algo.num_steps
        self.reward_norm = nn.ModuleDict({
            name: _reward_normalizer(config, (num_envs, spec.num_agents))
            for name, spec in env.groups.items()
        }).to(device)
        self.storage = {name: _allocate(group, steps, num_envs, device)
                        for name, group in self._items()}
        state_shape = (steps, num_envs, state_features)
        self.state = torch.zeros(state_shape, device=device) if self.use_state else None
        self.final_state = torch.zeros(state_shape, device=device) if self.use_state else None
        self.next: BatchedReset | None = None

    def _items(self) -> list[tuple[str, AgentGroup]]:
        return [(name, group) for name, group in self.groups.items()]  # type: ignore[misc]

    # ----------------------------------------------------------------- rollout
    @torch.no_grad()
    def collect(self, tracker: EpisodeTracker) -> int:
        """Step every env copy ``num_steps`` times into storage; return env steps taken."""
        if self.next is None:
            self.next = self.env.reset(seed=self.config.seed)
        current = self.next
        for t in range(self.algo.num_steps):
            actions = {}
            for name, group in self._items():
                store = self.storage[name]
                obs = current.groups[name]
                alive = obs.alive.to(self.device)
                flat = group.prepare_obs(obs.obs.to(self.device), alive, update=True)
                mask = None if obs.action_mask is None else obs.action_mask.to(self.device)
                action, log_prob = group.act(flat, mask)
                store.obs[t] = flat
                store.action[t] = action
                store.log_prob[t] = log_prob
                store.alive[t] = alive
                if store.action_mask is not None and mask is not None:
                    store.action_mask[t] = mask
                actions[name] = group.env_action(action).to(self.env.device)
            if self.state is not None:
                self.state[t] = self._prepare_state(current.state, update=True)
            step = self.env.step(actions)
            for name, group in self._items():
                self._store_transition(name, group, t, step.groups[name])
            if self.final_state is not None:
                self.final_state[t] = self._prepare_state(step.final_state, update=False)
            tracker.record(step, {name: self.storage[name].alive[t] for name in self.groups})
            current = BatchedReset({name: s.next for name, s in step.groups.items()}, step.state)
        self.next = current
        return self.algo.num_steps * self.env.num_envs

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
        """Critic input ``[*B, A, C]`` from ``obs: [*B, A, F]`` and ``state: [*B, S]``."""
        if not self.centralised:
            return obs
        num_agents = obs.shape[-2]
        if state is None:  # no env.state(): the group's observations, concatenated
            state = obs.flatten(-2)
        return state.unsqueeze(-2).expand(*state.shape[:-1], num_agents, state.shape[-1])

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
    def _estimates(self, name: str) -> Estimates:
        group, store = self.groups[name], self.storage[name]
        assert isinstance(group, AgentGroup)
        prediction = group.prediction(self.critic_input(name, store.obs, self.state))
        values = group.to_return_units(prediction)
        next_values = group.value(self.critic_input(name, store.final_obs, self.final_state))
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
        batches = self._flat_batches()
        num_samples = next(iter(batches.values())).obs.shape[0]
        sums: dict[str, torch.Tensor] = {}
        for _ in range(algo.update_epochs):
            order = torch.randperm(num_samples, device=self.device)
            for index in order.chunk(algo.num_minibatches):
                total = torch.zeros((), device=self.device)
                for name, batch in batches.items():
                    group = self.groups[name]
                    assert isinstance(group, AgentGroup)
                    terms = ppo_loss(group, _take(batch, index), algo.clip_coef, ent_coef,
                                     algo.vf_coef, algo.clip_vloss, algo.norm_adv)
                    total = total + terms["loss"]
                    for key, value in terms.items():
                        sums[f"{name}/{key}"] = sums.get(f"{name}/{key}", 0) + value.detach()
                self.optimizer.zero_grad()
                total.backward()
                for key, value in self.optimizer.clip_and_step().items():
                    sums[key] = sums.get(key, 0) + value
        count = algo.update_epochs * algo.num_minibatches
        metrics = {key: float(value) / count for key, value in sums.items()}
        self._check_finite(metrics)
        metrics["ent_coef"] = ent_coef
        metrics["lr"] = self.optimizer.optimizers[0].param_groups[0]["lr"]
        return metrics

    def _flat_batches(self) -> dict[str, Minibatch]:
        """Each group's rollout with time and env folded: ``[T*E, A, ...]``."""
        batches = {}
        for name, store in self.storage.items():
            group = self.groups[name]
            assert isinstance(group, AgentGroup)
            estimates = self._estimates(name)
            if group.value_norm is not None:
                group.value_norm.update(estimates.returns, store.alive)
            critic_input = self.critic_input(name, store.obs, self.state)

            def flat(x: torch.Tensor) -> torch.Tensor:
                return x.reshape(-1, *x.shape[2:])

            batches[name] = Minibatch(
                flat(store.obs), flat(critic_input), flat(store.action), flat(store.log_prob),
                flat(estimates.advantages), flat(estimates.returns),
                flat(estimates.prediction), flat(store.alive),
                None if store.action_mask is None else flat(store.action_mask),
            )
        return batches

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
    def new_memory(self, num_envs: int) -> AgentMemory:
        """Fresh recurrent state for ``num_envs`` copies (empty for feed-forward groups)."""
        return AgentMemory({}, num_envs, self.device)

    def eval_actions(self, current: BatchedReset, sample: bool,
                     memory: AgentMemory) -> dict[str, torch.Tensor]:
        """Env-form actions ``[E, A(, D)]``: the policy's mode, or a sample if ``sample``;
        observation statistics are frozen."""
        actions = {}
        for name, group in self._items():
            obs = current.groups[name]
            flat = group.prepare_obs(obs.obs.to(self.device))
            mask = None if obs.action_mask is None else obs.action_mask.to(self.device)
            action = group.act(flat, mask, deterministic=not sample).action
            actions[name] = group.env_action(action).to(self.env.device)
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
        """Start new episodes in every copy (after resuming from a checkpoint)."""
        self.next = self.env.reset(seed=seed)


def ppo_loss(group: AgentGroup, batch: Minibatch, clip_coef: float, ent_coef: float,
             vf_coef: float, clip_vloss: bool, norm_adv: bool) -> dict[str, torch.Tensor]:
    """PPO's clipped objective for one group, averaged over alive agents.

    Returns named terms: ``loss`` (what is summed over groups and minimised),
    ``policy``, ``value``, ``entropy``, ``approx_kl`` and ``clip_fraction``.
    """
    alive = batch.alive
    count = alive.sum().clamp_min(1)

    def mean(x: torch.Tensor) -> torch.Tensor:
        # where, not a product: an overflow in a dead agent's slot must not become NaN.
        return torch.where(alive, x, 0.0).sum() / count

    advantage = batch.advantage
    if norm_adv:
        centred = advantage - mean(advantage)
        advantage = centred / (mean(centred**2).sqrt() + 1e-8)
    dist = group.distribution(batch.obs, batch.action_mask)
    log_ratio = dist.log_prob(batch.action) - batch.log_prob
    ratio = log_ratio.exp()
    policy = mean(torch.maximum(-advantage * ratio,
                                -advantage * ratio.clamp(1 - clip_coef, 1 + clip_coef)))
    prediction = group.prediction(batch.critic_input)
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


def _take(batch: Minibatch, index: torch.Tensor) -> Minibatch:
    mask = None if batch.action_mask is None else batch.action_mask[index]
    return Minibatch(batch.obs[index], batch.critic_input[index], batch.action[index],
                     batch.log_prob[index], batch.advantage[index], batch.returns[index],
                     batch.old_prediction[index], batch.alive[index], mask)


def _allocate(group: AgentGroup, steps: int, num_envs: int,
              device: torch.device) -> GroupRollout:
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


def _reward_normalizer(config: Config, batch_shape: tuple[int, int]) -> nn.Module:
    mode = config.algo.reward_norm
    if mode == "running":
        return ReturnScaler(batch_shape, config.algo.gamma)
    if mode == "episode":
        return EpisodeRewardStandardizer(batch_shape)
    return nn.Identity()


__all__ = ["PPO", "GroupObs", "NonFiniteLossError", "ppo_loss"]
