"""MADDPG and MATD3: deterministic actors with centralised critics.

Every agent has a deterministic actor on its own observation and a critic on the global
state plus every agent's action (Lowe et al. 2017, arXiv:1706.02275). The actor of
agent ``i`` follows ``dQ_i/da_i`` with the other agents' actions taken from replay, as in
MADDPG. MATD3 adds TD3's three changes (Fujimoto et al. 2018, arXiv:1802.09477;
Ackermann et al. 2019, arXiv:1910.01465): twin critics and the minimum of their targets
(clipped double Q), clipped Gaussian noise on the target actor's action (target policy
smoothing), and actor and soft target updates only every ``policy_delay`` critic
updates (on the other updates the actor terms are left out of the summed loss); hard
target copies keep to ``target_update_interval`` whatever the delay.

Actions are kept in ``[-1, 1]`` (a tanh head) and scaled to the env's Box bounds only
when handed to the env. Exploration adds Gaussian noise; before ``warmup_steps``
actions are uniform. Evaluation uses the actor's action as is.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import gymnasium
import torch
from marl_envs.core import BatchedEnv
from torch import nn

from marl.algos.off_policy import OffPolicy, masked_mean
from marl.config import Config
from marl.group_nets import build_group_net
from marl.replay import Sample
from marl.targets import make_target, smoothed_target_action


@contextlib.contextmanager
def frozen(modules: list[nn.Module]) -> Iterator[None]:
    """Stop gradients into ``modules``' parameters while still passing them to inputs.

    The actor loss goes through the critic; in a summed loss stepped by one optimiser the
    critic must not also be pushed by it.
    """
    params = [p for module in modules for p in module.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


class DDPG(OffPolicy):
    """MADDPG or MATD3 (``config.algo.name``) over all agent groups of a batched env."""

    def __init__(self, env: BatchedEnv, config: Config, device: torch.device) -> None:
        super().__init__(env, config, device)
        self.td3 = config.algo.name == "matd3"
        self.policy_delay = config.algo.policy_delay if self.td3 else 1
        self.action_dim = {name: self._action_space(name).shape[0] for name in self.specs}
        joint_actions = sum(self.num_agents[n] * self.action_dim[n] for n in self.specs)
        critic_features = self.global_state_features() + joint_actions
        self.action_low = {n: torch.as_tensor(self._action_space(n).low, dtype=torch.float32,
                                              device=device) for n in self.specs}
        self.action_high = {n: torch.as_tensor(self._action_space(n).high, dtype=torch.float32,
                                               device=device) for n in self.specs}

        def build(name: str, shape: tuple[int, ...], out_features: int, gain: float,
                  reads_obs: bool) -> nn.Module:
            return build_group_net(config.groups, self.sharing[name], shape, out_features,
                                   self.num_agents[name], gain, name, reads_obs,
                                   task=config.env.task)

        self.actor = nn.ModuleDict({
            n: build(n, self.specs[n].obs_shape, self.action_dim[n], 0.01, True)
            for n in self.specs})
        num_critics = 2 if self.td3 else 1
        self.critics = nn.ModuleList([
            nn.ModuleDict({n: build(n, (critic_features,), 1, 1.0, False) for n in self.specs})
            for _ in range(num_critics)])
        self.target_actor = nn.ModuleDict({n: make_target(a) for n, a in self.actor.items()})
        self.target_critics = nn.ModuleList([make_target(c) for c in self.critics])
        trained: dict[str, nn.Module] = {f"{n}/actor": self.actor[n] for n in self.specs}
        for index, critic in enumerate(self.critics):
            trained.update({f"{n}/critic{index + 1}": _member(critic, n) for n in self.specs})
        self._finish_init(trained)
        self._actor_due = True

    def _action_space(self, name: str) -> gymnasium.spaces.Box:
        space = self.specs[name].action_space
        assert isinstance(space, gymnasium.spaces.Box)
        return space

    def act(self, obs: dict[str, torch.Tensor], masks: dict[str, torch.Tensor | None],
            explore: bool) -> dict[str, torch.Tensor]:
        """Actions ``[E, A, D]`` in ``[-1, 1]``: uniform before ``warmup_steps``, then
        the actor's with Gaussian noise (the actor's alone without ``explore``)."""
        actions = {}
        warm_up = explore and self.replay.num_transitions < self.algo.warmup_steps
        for name, group_obs in obs.items():
            action = self.actor[name](group_obs).tanh()
            if warm_up:
                action = torch.rand_like(action) * 2.0 - 1.0
            elif explore:
                noise = torch.randn_like(action) * self.algo.exploration_noise
                action = (action + noise).clamp(-1.0, 1.0)
            actions[name] = action
        return actions

    def env_action(self, name: str, action: torch.Tensor) -> torch.Tensor:
        """``[-1, 1]`` actions scaled to the group's Box ``[low, high]``."""
        low, high = self.action_low[name], self.action_high[name]
        return low + (action + 1.0) * 0.5 * (high - low)

    def _critic_input(self, name: str, state: torch.Tensor,
                      joint: torch.Tensor) -> torch.Tensor:
        """``[B, A_g, S + J]`` from ``state: [B, S]`` and ``joint: [B, A_g, J]``."""
        expanded = state.unsqueeze(1).expand(-1, joint.shape[1], -1)
        return torch.cat([expanded, joint], dim=-1)

    def _joint(self, actions: dict[str, torch.Tensor], name: str) -> torch.Tensor:
        """Every agent's actions, flattened, repeated for the ``A_g`` agents of ``name``:
        ``[B, A_g, J]``."""
        flat = torch.cat([a.flatten(-2) for a in actions.values()], dim=-1)
        return flat.unsqueeze(1).expand(-1, self.num_agents[name], -1)

    def _joint_with_own(self, replayed: dict[str, torch.Tensor],
                        policy: dict[str, torch.Tensor], name: str) -> torch.Tensor:
        """Agent ``i`` of group ``name`` sees its own policy action and the replayed
        actions of every other agent: ``[B, A_g, J]``."""
        parts = []
        size = self.num_agents[name]
        for other, action in replayed.items():
            rows = action.unsqueeze(1).expand(-1, size, -1, -1)  # [B, A_g, A_h, D_h]
            if other == name:
                own = torch.eye(size, dtype=torch.bool, device=self.device).view(
                    1, size, size, 1)
                rows = torch.where(own, policy[name].unsqueeze(1), rows)
            parts.append(rows.flatten(-2))
        return torch.cat(parts, dim=-1)

    def losses(self, sample: Sample) -> dict[str, torch.Tensor]:
        """Critic TD losses on every update; actor losses every ``policy_delay`` updates."""
        obs = {n: self.normalize_obs(n, g.obs) for n, g in sample.groups.items()}
        next_obs = {n: self.normalize_obs(n, g.team_next_obs) for n, g in sample.groups.items()}
        state = self.global_state(sample.state, obs)
        replayed = {n: g.action for n, g in sample.groups.items()}
        terms: dict[str, torch.Tensor] = {}
        total = torch.zeros((), device=self.device)
        with torch.no_grad():
            next_state = self.global_state(sample.next_state, next_obs)
            next_actions = {n: self.target_actor[n](o).tanh() for n, o in next_obs.items()}
            if self.td3:
                next_actions = {n: smoothed_target_action(a, self.algo.target_noise,
                                                          self.algo.target_noise_clip)
                                for n, a in next_actions.items()}
        for name, group in sample.groups.items():
            with torch.no_grad():
                next_input = self._critic_input(name, next_state, self._joint(next_actions, name))
                next_q = torch.stack([_member(c, name)(next_input).squeeze(-1)
                                      for c in self.target_critics]).min(0).values
                target = group.reward + group.discount * next_q
            critic_input = self._critic_input(name, state, self._joint(replayed, name))
            loss = torch.zeros((), device=self.device)
            for index, critic in enumerate(self.critics):
                q = _member(critic, name)(critic_input).squeeze(-1)
                loss = loss + masked_mean((q - target) ** 2, group.alive)
                if index == 0:
                    terms[f"{name}/q"] = masked_mean(q.detach(), group.alive)
            terms[f"{name}/critic_loss"] = loss
            total = total + loss
        self._actor_due = self.num_updates % self.policy_delay == 0
        if self._actor_due:
            total = total + self._actor_losses(sample, obs, state, replayed, terms)
        terms["loss"] = total
        return terms

    def _actor_losses(self, sample: Sample, obs: dict[str, torch.Tensor], state: torch.Tensor,
                      replayed: dict[str, torch.Tensor],
                      terms: dict[str, torch.Tensor]) -> torch.Tensor:
        policy = {n: self.actor[n](o).tanh() for n, o in obs.items()}
        total = torch.zeros((), device=self.device)
        first_critic = self.critics[0]
        assert isinstance(first_critic, nn.ModuleDict)
        with frozen([first_critic]):
            for name, group in sample.groups.items():
                critic_input = self._critic_input(
                    name, state, self._joint_with_own(replayed, policy, name))
                loss = -masked_mean(first_critic[name](critic_input).squeeze(-1), group.alive)
                terms[f"{name}/actor_loss"] = loss
                total = total + loss
        return total

    def target_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        """Actor and critic targets."""
        return [(self.actor, self.target_actor), (self.critics, self.target_critics)]

    def soft_targets_due(self) -> bool:
        """Under MATD3 soft targets move only on the updates that train actors (TD3).

        Hard copies do not wait for an actor update: they follow the update count, so a
        ``target_update_interval`` that is a multiple of ``policy_delay`` still copies.
        """
        return self._actor_due

    def modules(self) -> dict[str, nn.Module]:
        return {"actor": self.actor, "critics": self.critics, "target_actor": self.target_actor,
                "target_critics": self.target_critics, "obs_norm": self.obs_norm,
                "state_norm": self.state_norm}


def _member(container: nn.Module, name: str) -> nn.Module:
    """Group ``name``'s network in a ``ModuleDict`` held by a ``ModuleList``."""
    assert isinstance(container, nn.ModuleDict)
    return container[name]
