"""IQL, VDN and QMIX: value-based learning with one Q network per group (shared or not).

- IQL trains each agent's Q on its own reward, as if the others were part of the env
  (Tan 1993; Tampuu et al. 2017, arXiv:1511.08779).
- VDN learns the team's Q as the sum of the agents' Qs, trained on the team reward
  (Sunehag et al. 2018, arXiv:1706.05296).
- QMIX mixes the agents' Qs with a network whose weights come from hypernetworks of the
  global state and are kept non-negative, so the team's greedy action is every agent's
  greedy action (Rashid et al. 2018, arXiv:1803.11485).

With several groups, VDN and QMIX mix all agents of the team across groups. The team
reward is the mean reward of the agents alive. Agents here are feed-forward (no
recurrent Q-agents). Action masks restrict exploration and greedy actions; the
bootstrap's max ignores them, since masks of the next observation are not stored.
"""

from __future__ import annotations

import gymnasium
import torch
from marl_envs.core import BatchedEnv
from torch import nn

from marl.algos.off_policy import OffPolicy, masked_mean
from marl.config import Config
from marl.group_nets import build_group_net
from marl.replay import Sample
from marl.targets import make_target

_MASKED_Q = -1e8


class QMixer(nn.Module):
    """QMIX's monotonic mixing network: ``Q_tot = f(Q_1..Q_N; s)`` with ``df/dQ_i >= 0``.

    Args:
        num_agents: ``N``, agents of the team (all groups).
        state_features: ``S``.
        embed: hidden width of the mixing network.
        hypernet_hidden: hidden width of the hypernetworks producing the weights.
    """

    def __init__(self, num_agents: int, state_features: int, embed: int = 32,
                 hypernet_hidden: int = 64) -> None:
        super().__init__()
        self.num_agents = num_agents
        self.embed = embed
        self.hyper_w1 = nn.Sequential(nn.Linear(state_features, hypernet_hidden), nn.ReLU(),
                                      nn.Linear(hypernet_hidden, num_agents * embed))
        self.hyper_b1 = nn.Linear(state_features, embed)
        self.hyper_w2 = nn.Sequential(nn.Linear(state_features, hypernet_hidden), nn.ReLU(),
                                      nn.Linear(hypernet_hidden, embed))
        self.value = nn.Sequential(nn.Linear(state_features, embed), nn.ReLU(),
                                   nn.Linear(embed, 1))

    def forward(self, agent_q: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        """Mix ``agent_q: [B, N]`` conditioned on ``state: [B, S]`` into ``[B]``."""
        batch = agent_q.shape[0]
        # abs keeps the mixing weights non-negative: monotonic in every agent's Q.
        w1 = self.hyper_w1(state).abs().view(batch, self.num_agents, self.embed)
        b1 = self.hyper_b1(state).view(batch, 1, self.embed)
        hidden = nn.functional.elu(torch.bmm(agent_q.unsqueeze(1), w1) + b1)
        w2 = self.hyper_w2(state).abs().view(batch, self.embed, 1)
        return (torch.bmm(hidden, w2) + self.value(state).view(batch, 1, 1)).view(batch)


class QLearning(OffPolicy):
    """IQL, VDN or QMIX (``config.algo.name``) over all agent groups of a batched env."""

    def __init__(self, env: BatchedEnv, config: Config, device: torch.device) -> None:
        super().__init__(env, config, device)
        self.mode = config.algo.name
        net = config.groups
        self.num_actions = {name: _num_actions(spec.action_space)
                            for name, spec in self.specs.items()}
        self.q = nn.ModuleDict({
            name: build_group_net(net, self.sharing[name], spec.obs_shape,
                                  self.num_actions[name], self.num_agents[name], 1.0, name)
            for name, spec in self.specs.items()})
        self.target_q = nn.ModuleDict({name: make_target(q) for name, q in self.q.items()})
        self.mixer: QMixer | None = None
        self.target_mixer: nn.Module | None = None
        trained: dict[str, nn.Module] = dict(self.q.items())
        if self.mode == "qmix":
            self.mixer = QMixer(sum(self.num_agents.values()), self.global_state_features(),
                                config.algo.mixer_embed)
            self.target_mixer = make_target(self.mixer)
            trained["mixer"] = self.mixer
        self._finish_init(trained)

    def epsilon(self) -> float:
        """Exploration rate after ``env_steps`` steps of the linear schedule."""
        algo = self.algo
        fraction = min(1.0, self.env_steps / max(algo.eps_anneal_steps, 1))
        return algo.eps_start + (algo.eps_end - algo.eps_start) * fraction

    def act(self, obs: dict[str, torch.Tensor], masks: dict[str, torch.Tensor | None],
            explore: bool) -> dict[str, torch.Tensor]:
        """Epsilon-greedy actions ``[E, A]`` (greedy without ``explore``)."""
        epsilon = self.epsilon() if explore else 0.0
        actions = {}
        for name, group_obs in obs.items():
            q = self.q[name](group_obs)
            mask = masks[name]
            if mask is not None:
                q = q.masked_fill(~mask, _MASKED_Q)
            greedy = q.argmax(-1)
            if epsilon > 0.0:
                # Uniform over allowed actions: argmax of noise restricted by the mask.
                noise = torch.rand_like(q)
                if mask is not None:
                    noise = noise.masked_fill(~mask, -1.0)
                random = noise.argmax(-1)
                explore_now = torch.rand(greedy.shape, device=greedy.device) < epsilon
                greedy = torch.where(explore_now, random, greedy)
            actions[name] = greedy
        return actions

    def losses(self, sample: Sample) -> dict[str, torch.Tensor]:
        """TD loss of every agent (IQL) or of the team's mixed Q (VDN, QMIX)."""
        team = self.mode != "iql"
        chosen, next_values, alive, next_alive, terms = [], [], [], [], {}
        obs_by_group, next_obs_by_group = {}, {}
        for name, group in sample.groups.items():
            obs = self.normalize_obs(name, group.obs)
            q = self.q[name](obs)
            q_taken = q.gather(-1, group.action.unsqueeze(-1)).squeeze(-1)  # [B, A]
            next_obs = self.normalize_obs(name, group.team_next_obs if team else group.next_obs)
            with torch.no_grad():
                next_value = self._next_value(name, next_obs)  # [B, A]
            obs_by_group[name], next_obs_by_group[name] = obs, next_obs
            terms[f"{name}/q_taken"] = masked_mean(q_taken.detach(), group.alive)
            if not team:
                target = group.reward + group.discount * next_value
                terms[f"{name}/td_loss"] = masked_mean((q_taken - target) ** 2, group.alive)
            chosen.append(torch.where(group.alive, q_taken, 0.0))
            next_values.append(torch.where(group.next_alive, next_value, 0.0))
            alive.append(group.alive)
            next_alive.append(group.next_alive)
        if not team:
            terms["loss"] = sum((terms[f"{name}/td_loss"] for name in sample.groups),
                                torch.zeros((), device=self.device))
            return terms
        agent_q, agent_next = torch.cat(chosen, dim=-1), torch.cat(next_values, dim=-1)
        if self.mixer is not None and self.target_mixer is not None:
            q_total = self.mixer(agent_q, self.global_state(sample.state, obs_by_group))
            with torch.no_grad():
                next_total = self.target_mixer(
                    agent_next, self.global_state(sample.next_state, next_obs_by_group))
        else:
            q_total, next_total = agent_q.sum(-1), agent_next.sum(-1)
        target = sample.team_reward + sample.team_discount * next_total
        terms["td_loss"] = ((q_total - target) ** 2).mean()
        terms["q_total"] = q_total.detach().mean()
        terms["loss"] = terms["td_loss"]
        return terms

    def _next_value(self, name: str, next_obs: torch.Tensor) -> torch.Tensor:
        """``max_a Q_target(s', a)``, or with double Q ``Q_target(s', argmax_a Q(s', a))``."""
        target_q = self.target_q[name](next_obs)
        if not self.algo.double_q:
            return target_q.max(-1).values
        best = self.q[name](next_obs).argmax(-1, keepdim=True)
        return target_q.gather(-1, best).squeeze(-1)

    def target_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        pairs: list[tuple[nn.Module, nn.Module]] = [
            (self.q[name], self.target_q[name]) for name in self.specs]
        if self.mixer is not None and self.target_mixer is not None:
            pairs.append((self.mixer, self.target_mixer))
        return pairs

    def modules(self) -> dict[str, nn.Module]:
        modules: dict[str, nn.Module] = {"q": self.q, "target_q": self.target_q,
                                         "obs_norm": self.obs_norm,
                                         "state_norm": self.state_norm}
        if self.mixer is not None and self.target_mixer is not None:
            modules["mixer"] = self.mixer
            modules["target_mixer"] = self.target_mixer
        return modules


def _num_actions(space: gymnasium.Space) -> int:
    assert isinstance(space, gymnasium.spaces.Discrete)
    return int(space.n)
