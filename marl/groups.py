"""Agent groups: the agents of one kind, their policy, critic and observation statistics.

A group runs all of its agents in one call: ``obs: [*B, A, F] -> [*B, A, ...]``, with
observations flattened and normalised per feature (:meth:`AgentGroup.prepare_obs`); the
networks restore ``[*B, A, *obs_shape]`` before their encoder. Whether the agents share one
network (with a one-hot agent ID) or each has its own, and which encoder and trunk they
use, is decided by :func:`marl.group_nets.build_group_net`; nothing else in the learner
depends on it.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import gymnasium
import torch
from marl_envs.core import GroupSpec
from torch import nn

from marl.config import Config
from marl.group_nets import build_group_net
from marl.nets import RecurrentGroupNet, unroll_together
from marl.normalize import RunningMeanStd

_MASKED_LOGIT = -1e8


class UnsupportedSpaceError(TypeError):
    """An observation or action space the learner cannot handle."""


class ActionOutput(NamedTuple):
    """Actions sampled for a group.

    Attributes:
        action: ``[*B, A]`` int64 (discrete) or ``[*B, A, D]`` float32 (continuous).
        log_prob: ``[*B, A]``.
        hidden: a recurrent policy's state after the step ``[B, A, H]``; ``None`` for a
            feed-forward one.
    """

    action: torch.Tensor
    log_prob: torch.Tensor
    hidden: torch.Tensor | None = None


class Recurrence(NamedTuple):
    """What a recurrent network needs besides its input (:mod:`marl.nets.recurrent`).

    One step: ``hidden: [B, A, H]``, ``first`` and ``alive: [B, A]``, input ``[B, A, F]``.
    A sequence: the same ``hidden`` (the state before step 0), ``first`` and
    ``alive: [T, B, A]``, input ``[T, B, A, F]``.
    """

    hidden: torch.Tensor
    first: torch.Tensor
    alive: torch.Tensor | None


def run_net(net: nn.Module, x: torch.Tensor,
            recurrence: Recurrence | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``net`` on ``x``: feed-forward ``(net(x), None)``; recurrent, one step
    ``(out, new_hidden)`` or a sequence ``(out, states)`` (:meth:`RecurrentGroupNet.unroll`)."""
    if not isinstance(net, RecurrentGroupNet):
        return net(x), None
    if recurrence is None:
        raise ValueError(f"{type(net).__name__} is recurrent: pass its hidden state, episode "
                         "starts and alive mask (Recurrence)")
    hidden, first, alive = recurrence
    if x.dim() == hidden.dim():  # one step: x [B, A, F], hidden [B, A, H]
        return net.step(x, hidden, first, alive)
    return net.unroll(x, hidden, first, alive)


class AgentGroup(nn.Module):
    """Policy and critic for the agents of one group.

    Args:
        spec: the group's agents and spaces.
        critic_features: size of one agent's critic input (its own observation for IPPO,
            the global state for MAPPO).
        sharing: ``"shared"`` or ``"independent"``.
        config: the networks come from ``config.groups`` (:func:`build_group_net`);
            the initial log-std from ``config.algo``.
        critic_reads: ``"obs"``: the agent's own observation (IPPO), through the
            observation's encoder; ``"state"``: ``critic_features`` of global state or
            joint observations (MAPPO), through an MLP; ``"obs_state"``: the observation
            followed by those ``critic_features`` (``algo.critic_input=obs_state``),
            through the observation's encoder with the state as one more entity row under
            an entity layout, feed-forward.
    """

    def __init__(self, spec: GroupSpec, critic_features: int, sharing: str,
                 config: Config, critic_reads: str = "state") -> None:
        super().__init__()
        self.spec = spec
        self.name = spec.name
        self.num_agents = spec.num_agents
        self.obs_features = math.prod(spec.obs_shape)
        self.discrete, action_dim = _action_layout(spec)
        self.action_dim = action_dim
        net = config.groups

        # Orthogonal init gains follow Andrychowicz et al. 2021 (arXiv:2006.05990):
        # a near-zero policy head starts close to uniform, the value head at gain 1.
        self.actor = build_group_net(net, sharing, spec.obs_shape, action_dim, self.num_agents,
                                     0.01, spec.name, task=config.env.task)
        on_obs = critic_reads != "state"
        self.critic = build_group_net(
            net, sharing, spec.obs_shape if on_obs else (critic_features,), 1,
            self.num_agents, 1.0, spec.name, reads_obs=on_obs, task=config.env.task,
            appended=critic_features if critic_reads == "obs_state" else 0)
        if not self.discrete:
            std_shape = (action_dim,) if sharing == "shared" else (self.num_agents, action_dim)
            self.log_std = nn.Parameter(torch.full(std_shape, config.algo.log_std_init))
        self.obs_norm = (RunningMeanStd((self.obs_features,), real=feature_mask(spec))
                         if config.algo.obs_norm else None)
        self.value_norm = RunningMeanStd(()) if config.algo.value_norm else None
        # Policies index a Discrete(n, start=s) space by 0..n-1; the env takes s..s+n-1.
        self.action_start = discrete_start(spec.action_space)
        if self.discrete:
            self.register_buffer("_action_low", torch.zeros(0), persistent=False)
            self.register_buffer("_action_high", torch.zeros(0), persistent=False)
        else:
            space = spec.action_space
            assert isinstance(space, gymnasium.spaces.Box)
            self.register_buffer("_action_low", torch.as_tensor(space.low).flatten(),
                                 persistent=False)
            self.register_buffer("_action_high", torch.as_tensor(space.high).flatten(),
                                 persistent=False)

    def prepare_obs(self, obs: torch.Tensor, alive: torch.Tensor | None = None,
                    update: bool = False) -> torch.Tensor:
        """Flatten ``obs: [*B, A, *obs_shape]`` to ``[*B, A, F]`` and normalise it.

        With ``update``, the running statistics first absorb the observations of the
        agents marked ``alive: [*B, A]`` (padding slots of absent agents are left out, and
        so are the padded features of agents with shorter observations).
        """
        flat = obs.reshape(*obs.shape[:-len(self.spec.obs_shape)], self.obs_features).float()
        if self.obs_norm is None:
            return flat
        if update:
            self.obs_norm.update(flat, alive)
        return self.obs_norm.normalize(flat)

    @property
    def actor_hidden(self) -> int | None:
        """The recurrent policy's state size ``H``; ``None`` when it is feed-forward."""
        return self.actor.hidden_size if isinstance(self.actor, RecurrentGroupNet) else None

    @property
    def critic_hidden(self) -> int | None:
        """The recurrent critic's state size ``H``; ``None`` when it is feed-forward."""
        return self.critic.hidden_size if isinstance(self.critic, RecurrentGroupNet) else None

    def distribution(self, obs: torch.Tensor, action_mask: torch.Tensor | None = None,
                     recurrence: Recurrence | None = None) -> _Distribution:
        """The policy at ``obs: [*B, A, F]``; ``action_mask: [*B, A, n]`` bool or None.

        A recurrent policy also takes ``recurrence`` (one step or a sequence ``[T, B, A,
        F]``)."""
        return self._distribution(obs, action_mask, recurrence)[0]

    def _distribution(self, obs: torch.Tensor, action_mask: torch.Tensor | None,
                      recurrence: Recurrence | None
                      ) -> tuple[_Distribution, torch.Tensor | None]:
        out, hidden = run_net(self.actor, obs, recurrence)
        return self._policy(out, action_mask), hidden

    def _policy(self, out: torch.Tensor, action_mask: torch.Tensor | None) -> _Distribution:
        """The distribution the actor's outputs ``[*B, A, n or D]`` parametrise."""
        if self.discrete:
            if action_mask is not None:
                out = out.masked_fill(~action_mask, _MASKED_LOGIT)
            return _Categorical(out)
        return _Gaussian(out, self.log_std.expand_as(out))

    def policy_and_prediction(
        self, obs: torch.Tensor, critic_input: torch.Tensor, action_mask: torch.Tensor | None,
        actor_in: Recurrence | None, critic_in: Recurrence | None,
    ) -> tuple[_Distribution, torch.Tensor]:
        """:meth:`distribution` and :meth:`prediction` together; a recurrent policy and
        critic over the same sequences run their recurrences as one scan
        (:func:`marl.nets.unroll_together`)."""
        actor, critic = self.actor, self.critic
        if (actor_in is None or critic_in is None or not isinstance(actor, RecurrentGroupNet)
                or not isinstance(critic, RecurrentGroupNet)):
            return (self.distribution(obs, action_mask, actor_in),
                    self.prediction(critic_input, critic_in))
        (out, _), (value, _) = unroll_together(
            [actor, critic], [obs, critic_input], [actor_in.hidden, critic_in.hidden],
            actor_in.first, actor_in.alive)
        return self._policy(out, action_mask), value.squeeze(-1)

    def act(self, obs: torch.Tensor, action_mask: torch.Tensor | None = None,
            deterministic: bool = False, recurrence: Recurrence | None = None) -> ActionOutput:
        """Sample (or take the mode of) the policy at ``obs: [*B, A, F]``; a recurrent
        policy steps from ``recurrence`` and returns its new state in ``hidden``."""
        dist, hidden = self._distribution(obs, action_mask, recurrence)
        action = dist.mode() if deterministic else dist.sample()
        return ActionOutput(action, dist.log_prob(action), hidden)

    def prediction(self, critic_input: torch.Tensor,
                   recurrence: Recurrence | None = None) -> torch.Tensor:
        """The critic's own output ``[*B, A]`` from ``critic_input: [*B, A, C]``: in
        normalised units under value normalisation, else in return units. A recurrent
        critic also takes ``recurrence``."""
        return run_net(self.critic, critic_input, recurrence)[0].squeeze(-1)

    def predictions_over(self, obs: torch.Tensor, final_obs: torch.Tensor,
                         recurrence: Recurrence) -> tuple[torch.Tensor, torch.Tensor]:
        """A recurrent critic over a sequence: its outputs ``[T, B, A]`` at ``obs: [T, B,
        A, F]`` and at ``final_obs`` (each step's returned observation, before any
        auto-reset), the latter from the state after each step."""
        assert isinstance(self.critic, RecurrentGroupNet)
        out, states = self.critic.unroll(obs, *recurrence)
        return out.squeeze(-1), self.critic.from_states(final_obs, states).squeeze(-1)

    def to_return_units(self, prediction: torch.Tensor) -> torch.Tensor:
        """Values ``[*B, A]`` in return units from the critic's ``prediction: [*B, A]``."""
        if self.value_norm is None:
            return prediction
        return self.value_norm.denormalize(prediction)

    def value(self, critic_input: torch.Tensor) -> torch.Tensor:
        """Values ``[*B, A]`` (in return units) from ``critic_input: [*B, A, C]``."""
        return self.to_return_units(self.prediction(critic_input))

    def env_action(self, action: torch.Tensor) -> torch.Tensor:
        """Actions as the env takes them: indices shifted by the Discrete space's start,
        Gaussian samples clipped to the Box bounds."""
        if self.discrete:
            return action + self.action_start if self.action_start else action
        high, low = self._action_high, self._action_low
        assert isinstance(high, torch.Tensor) and isinstance(low, torch.Tensor)
        return torch.maximum(torch.minimum(action, high), low)


class _Categorical:
    """Categorical over logits ``[*B, A, n]``; lighter than ``torch.distributions``."""

    def __init__(self, logits: torch.Tensor) -> None:
        self.log_probs = torch.log_softmax(logits, dim=-1)

    def sample(self) -> torch.Tensor:
        # Gumbel-max: one fused pass, no reshape to 2-D as torch.multinomial needs.
        uniform = torch.rand_like(self.log_probs).clamp_(1e-12, 1.0)
        return (self.log_probs - torch.log(-torch.log(uniform))).argmax(-1)

    def mode(self) -> torch.Tensor:
        return self.log_probs.argmax(-1)

    def log_prob(self, action: torch.Tensor) -> torch.Tensor:
        return self.log_probs.gather(-1, action.unsqueeze(-1)).squeeze(-1)

    def entropy(self) -> torch.Tensor:
        probs = self.log_probs.exp()
        return -(probs * self.log_probs.clamp_min(_MASKED_LOGIT)).sum(-1)


class _Gaussian:
    """Diagonal Gaussian with mean ``[*B, A, D]``; log-probs summed over ``D``."""

    def __init__(self, mean: torch.Tensor, log_std: torch.Tensor) -> None:
        self.mean = mean
        self.log_std = log_std

    def sample(self) -> torch.Tensor:
        return self.mean + self.log_std.exp() * torch.randn_like(self.mean)

    def mode(self) -> torch.Tensor:
        return self.mean

    def log_prob(self, action: torch.Tensor) -> torch.Tensor:
        z = (action - self.mean) * torch.exp(-self.log_std)
        return (-0.5 * z * z - self.log_std - 0.5 * math.log(2 * math.pi)).sum(-1)

    def entropy(self) -> torch.Tensor:
        return (self.log_std + 0.5 * math.log(2 * math.pi * math.e)).sum(-1)


_Distribution = _Categorical | _Gaussian


def feature_mask(spec: GroupSpec) -> torch.Tensor:
    """``[A, F]`` bool: which flattened observation features each agent really has."""
    return spec.obs_mask.reshape(spec.num_agents, math.prod(spec.obs_shape))


def discrete_start(space: gymnasium.Space) -> int:
    """The first action of a ``Discrete`` space (``start``), 0 for any other space."""
    return int(space.start) if isinstance(space, gymnasium.spaces.Discrete) else 0


def _action_layout(spec: GroupSpec) -> tuple[bool, int]:
    """Whether the group's actions are discrete, and the policy head size."""
    space = spec.action_space
    if isinstance(space, gymnasium.spaces.Discrete):
        return True, int(space.n)
    if isinstance(space, gymnasium.spaces.Box) and len(space.shape) == 1:
        return False, int(space.shape[0])
    raise UnsupportedSpaceError(
        f"group {spec.name!r} (agents {', '.join(spec.agents)}): action space {space} is not "
        "supported; expected Discrete(n) or a 1-D Box. Wrap the env to flatten the action "
        "space, or use a task with discrete or vector-continuous actions."
    )
