"""IQL, VDN and QMIX: value-based learning with one Q network per group (shared or not).

- IQL trains each agent's Q on its own reward, as if the others were part of the env
  (Tan 1993; Tampuu et al. 2017, arXiv:1511.08779).
- VDN learns the team's Q as the sum of the agents' Qs, trained on the team reward
  (Sunehag et al. 2018, arXiv:1706.05296).
- QMIX mixes the agents' Qs with a network whose weights come from hypernetworks of the
  global state and are kept non-negative, so the team's greedy action is every agent's
  greedy action (Rashid et al. 2018, arXiv:1803.11485).

With several groups, VDN and QMIX mix all agents of the team across groups. The team
reward is the mean reward of the agents alive. Action masks restrict exploration and
greedy actions; the bootstrap's max ignores them, since masks of the next observation
are not stored.

Q-agents are feed-forward, or recurrent with ``groups.rnn=gru`` (DRQN, Hausknecht & Stone
2015, arXiv:1507.06527; EPyMARL's recurrent agents). Recurrent agents act from hidden
states carried through each episode and learn R2D2-style from replayed sequences
(:mod:`marl.sequence_replay`): the online and the target network each unroll their own
state over the sequence's window from zero, the ``burn_in`` steps before the sequence
without gradients; the Q value bootstrapping step ``t``'s n-step target is one step of
the network from the state after the window's last step on its ``final_obs``
(:meth:`~marl.nets.recurrent.RecurrentGroupNet.from_states`), for truncations too. TD
errors are averaged over the valid steps only (padding after an episode's end and after
the newest stored step is masked).
"""

from __future__ import annotations

from typing import NamedTuple

import gymnasium
import torch
from marl_envs.core import BatchedEnv
from torch import nn

from marl.algos.compiled import CompiledCollect, CompiledUpdate, compiled
from marl.algos.off_policy import OffPolicy, masked_mean
from marl.config import Config
from marl.group_nets import build_group_net
from marl.memory import AgentMemory
from marl.nets.recurrent import RecurrentGroupNet
from marl.replay import Sample
from marl.sequence_replay import GroupSequence, SequenceSample, at_steps
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


class _GroupTD(NamedTuple):
    """One group's part of a TD loss over a batch ``N`` (transitions or sequence steps).

    Attributes:
        q_taken: ``[N, A]`` online Q of the actions taken (with gradients).
        next_value: ``[N, A]`` target value of the bootstrap observation.
        reward, discount: ``[N, A]`` each agent's n-step reward and bootstrap factor.
        alive, next_alive: ``[N, A]`` bool, as :class:`marl.replay.GroupSample` has them.
        obs, next_obs: ``[N, A, F]`` normalised observations (a mixer's global state
            when the task has none).
    """

    q_taken: torch.Tensor
    next_value: torch.Tensor
    reward: torch.Tensor
    discount: torch.Tensor
    alive: torch.Tensor
    next_alive: torch.Tensor
    obs: torch.Tensor
    next_obs: torch.Tensor


class QLearning(OffPolicy):
    """IQL, VDN or QMIX (``config.algo.name``) over all agent groups of a batched env."""


    @property
    def compiled_parts(self) -> str:
        """What the compiled path compiles, for the run's config.yaml."""
        if self.compiled_update is None:
            return "the collection step, the sampled batch's loss and its backward"
        return ("the collection step, the update (the sampled batch's loss, gradients, "
                "clipping and Adam as one graph)")

    def __init__(self, env: BatchedEnv, config: Config, device: torch.device) -> None:
        super().__init__(env, config, device)
        self.mode = config.algo.name
        net = config.groups
        self.num_actions = {name: _num_actions(spec.action_space)
                            for name, spec in self.specs.items()}
        self.q = nn.ModuleDict({
            name: build_group_net(net, self.sharing[name], spec.obs_shape,
                                  self.num_actions[name], self.num_agents[name], 1.0, name,
                                  task=config.env.task)
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
        if self.eager_reason is None:  # train.compile: the collection step and the loss
            self.compiled_collect = CompiledCollect(self)
            self._drawn = compiled(self.drawn_losses)
            if config.train.compile_update and config.optim.mode == "common":
                self.compiled_update = CompiledUpdate(self.optimizer, self.drawn_total)

    def epsilon(self) -> float:
        """Exploration rate after ``env_steps`` steps of the linear schedule."""
        algo = self.algo
        fraction = min(1.0, self.env_steps / max(algo.eps_anneal_steps, 1))
        return algo.eps_start + (algo.eps_end - algo.eps_start) * fraction

    def act(self, obs: dict[str, torch.Tensor], masks: dict[str, torch.Tensor | None],
            explore: bool | torch.Tensor) -> dict[str, torch.Tensor]:
        """Epsilon-greedy actions ``[E, A]``: at the schedule's epsilon with ``explore``,
        greedy without, or at ``explore``'s epsilon when it is a 0-d tensor (a compiled
        step's input)."""
        return self._epsilon_greedy({name: self.q[name](group_obs)
                                     for name, group_obs in obs.items()}, masks, explore)

    def act_recurrent(self, obs: dict[str, torch.Tensor], masks: dict[str, torch.Tensor | None],
                      explore: bool, memory: AgentMemory, first: dict[str, torch.Tensor],
                      alive: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """:meth:`act` from ``memory``'s hidden states ``[E, A, H]``, zeroed where
        ``first`` and kept where not ``alive``; the new states go back into ``memory``."""
        q = {}
        for name, group_obs in obs.items():
            q[name], state = _recurrent(self.q, name).step(
                group_obs, memory.state(name, "q"), first[name], alive[name])
            memory.set_state(name, "q", state)
        return self._epsilon_greedy(q, masks, explore)

    def new_memory(self, num_envs: int) -> AgentMemory:
        """Zero hidden states ``[E, A, H]`` of every group's Q network (none when
        feed-forward)."""
        sizes = {name: {"q": (self.num_agents[name], _recurrent(self.q, name).hidden_size)}
                 for name in self.specs} if self.recurrent else {}
        return AgentMemory(sizes, num_envs, self.device)

    def _epsilon_greedy(self, q_values: dict[str, torch.Tensor],
                        masks: dict[str, torch.Tensor | None],
                        explore: bool | torch.Tensor) -> dict[str, torch.Tensor]:
        """Epsilon-greedy actions ``[E, A]`` from ``q_values[g]: [E, A, n]`` (``explore``
        as :meth:`act` takes it)."""
        epsilon: float | torch.Tensor = explore if isinstance(explore, torch.Tensor) else (
            self.epsilon() if explore else 0.0)
        actions = {}
        for name, q in q_values.items():
            mask = masks[name]
            if mask is not None:
                q = q.masked_fill(~mask, _MASKED_Q)
            greedy = q.argmax(-1)
            if isinstance(epsilon, torch.Tensor) or epsilon > 0.0:
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
        parts = {}
        for name, group in sample.groups.items():
            obs = self.normalize_obs(name, group.obs)
            q = self.q[name](obs)
            q_taken = q.gather(-1, group.action.unsqueeze(-1)).squeeze(-1)  # [B, A]
            next_obs = self.normalize_obs(name, group.team_next_obs if team else group.next_obs)
            with torch.no_grad():
                next_value = self._next_value(name, next_obs)  # [B, A]
            parts[name] = _GroupTD(q_taken, next_value, group.reward, group.discount,
                                   group.alive, group.next_alive, obs, next_obs)
        return self._td_terms(parts, sample.team_reward, sample.team_discount, sample.state,
                              sample.next_state, team_return=sample.team_return)

    def sequence_losses(self, sample: SequenceSample) -> dict[str, torch.Tensor]:
        """:meth:`losses` over ``[L, B]`` sequence steps, masked by ``sample.valid``."""
        team = self.mode != "iql"
        burn_in = sample.burn_in
        parts = {}
        for name, group in sample.groups.items():
            obs = self.normalize_obs(name, group.obs)  # [W, B, A, F]
            steps = group.action.shape[0]
            q, online_states = _unroll(_recurrent(self.q, name), obs, group, burn_in)
            q_taken = q[:steps].gather(-1, group.action.unsqueeze(-1)).squeeze(-1)  # [L, B, A]
            next_obs = self.normalize_obs(name, group.team_next_obs if team else group.next_obs)
            index = (sample.team_index.unsqueeze(-1).expand_as(group.next_index) if team
                     else group.next_index)
            with torch.no_grad():
                _, target_states = _unroll(_recurrent(self.target_q, name), obs, group, burn_in)
                next_value = self._next_value(name, next_obs, (at_steps(online_states, index),
                                                               at_steps(target_states, index)))
            parts[name] = _GroupTD(*(value.flatten(0, 1) for value in (
                q_taken, next_value, group.reward, group.discount, group.alive,
                group.next_alive, obs[burn_in:burn_in + steps], next_obs)))
        state, next_state = sample.state, sample.next_state
        return self._td_terms(parts, sample.team_reward.flatten(), sample.team_discount.flatten(),
                              None if state is None else state.flatten(0, 1),
                              None if next_state is None else next_state.flatten(0, 1),
                              sample.valid.flatten())

    def _td_terms(self, parts: dict[str, _GroupTD], team_reward: torch.Tensor,
                  team_discount: torch.Tensor, state: torch.Tensor | None,
                  next_state: torch.Tensor | None,
                  valid: torch.Tensor | None = None,
                  team_return: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Every agent's TD loss (IQL) or the team's (VDN, QMIX) over a batch ``N``.

        Args:
            parts: per group :class:`_GroupTD`.
            team_reward, team_discount: ``[N]``; state, next_state: ``[N, S]`` or None.
            valid: ``[N]`` bool, the entries the team's loss averages over (all if None).
            team_return: ``[N]`` observed discounted team returns; with
                ``algo.return_penalty > 0`` the loss adds that weight times the mean of
                ``(Q_tot - team_return)^2`` (logged as ``return_penalty``).
        """
        team = self.mode != "iql"
        terms: dict[str, torch.Tensor] = {}
        for name, part in parts.items():
            terms[f"{name}/q_taken"] = masked_mean(part.q_taken.detach(), part.alive)
            if not team:
                target = part.reward + part.discount * part.next_value
                terms[f"{name}/td_loss"] = masked_mean((part.q_taken - target) ** 2, part.alive)
        if not team:
            terms["loss"] = sum((terms[f"{name}/td_loss"] for name in parts),
                                torch.zeros((), device=self.device))
            return terms
        agent_q = torch.cat([torch.where(part.alive, part.q_taken, 0.0)
                             for part in parts.values()], dim=-1)
        agent_next = torch.cat([torch.where(part.next_alive, part.next_value, 0.0)
                                for part in parts.values()], dim=-1)
        if self.mixer is not None and self.target_mixer is not None:
            obs = {name: part.obs for name, part in parts.items()}
            q_total = self.mixer(agent_q, self.global_state(state, obs))
            next_obs = {name: part.next_obs for name, part in parts.items()}
            with torch.no_grad():
                next_total = self.target_mixer(agent_next, self.global_state(next_state, next_obs))
        else:
            q_total, next_total = agent_q.sum(-1), agent_next.sum(-1)
        target = team_reward + team_discount * next_total
        error = (q_total - target) ** 2
        terms["td_loss"] = error.mean() if valid is None else masked_mean(error, valid)
        terms["q_total"] = (q_total.detach().mean() if valid is None
                            else masked_mean(q_total.detach(), valid))
        terms["loss"] = terms["td_loss"]
        weight = self.algo.return_penalty
        if weight > 0.0:
            if team_return is None:
                raise ValueError("algo.return_penalty > 0 needs the sampled team returns "
                                 "(ReplayBuffer.sample(return_horizon=...))")
            gap = (q_total - team_return) ** 2
            terms["return_penalty"] = gap.mean() if valid is None else masked_mean(gap, valid)
            terms["loss"] = terms["td_loss"] + weight * terms["return_penalty"]
        return terms

    def _next_value(self, name: str, next_obs: torch.Tensor,
                    states: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """``max_a Q_target(s', a)``, or with double Q ``Q_target(s', argmax_a Q(s', a))``.

        ``next_obs: [*B, A, F]``; recurrent agents take one step on it from ``states``
        (online, target), each ``[*B, A, H]``."""
        target_q = self._q_of(self.target_q, name, next_obs, None if states is None else states[1])
        if not self.algo.double_q:
            return target_q.max(-1).values
        online_q = self._q_of(self.q, name, next_obs, None if states is None else states[0])
        best = online_q.argmax(-1, keepdim=True)
        return target_q.gather(-1, best).squeeze(-1)

    @staticmethod
    def _q_of(nets: nn.ModuleDict, name: str, obs: torch.Tensor,
              state: torch.Tensor | None) -> torch.Tensor:
        """Q values ``[*B, A, n]`` of ``obs``: a feed-forward call, or one recurrent step."""
        if state is None:
            return nets[name](obs)
        return _recurrent(nets, name).from_states(obs, state)

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


def _recurrent(nets: nn.ModuleDict, name: str) -> RecurrentGroupNet:
    net = nets[name]
    assert isinstance(net, RecurrentGroupNet), f"group {name!r} has no recurrent Q network"
    return net


def _unroll(net: RecurrentGroupNet, obs: torch.Tensor, group: GroupSequence,
            burn_in: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``net`` over a sequence window from a zero state, the first ``burn_in`` steps
    without gradients (they only warm the state up).

    Args:
        obs: ``[W, B, A, F]`` normalised; group: the window's ``first`` and
            ``window_alive`` (``[W, B, A]``).

    Returns:
        ``q: [W - burn_in, B, A, n]`` and ``states: [W - burn_in, B, A, H]`` of the steps
        after the warm-up.
    """
    hidden = net.initial_hidden(obs.shape[1])
    first, alive = group.first, group.window_alive
    if burn_in:
        with torch.no_grad():
            _, warm = net.unroll(obs[:burn_in], hidden, first[:burn_in], alive[:burn_in])
        hidden = warm[-1]
    return net.unroll(obs[burn_in:], hidden, first[burn_in:], alive[burn_in:])


def _num_actions(space: gymnasium.Space) -> int:
    assert isinstance(space, gymnasium.spaces.Discrete)
    return int(space.n)
