"""Agent-identity embeddings learned from transitions (Christianos et al. 2021, section 4).

An agent is described by what its experience looks like: the encoder maps the agent's
one-hot ID to a Gaussian ``q(z | a) = N(mu_a, diag(exp(log_var_a)))``, and a decoder must
predict each of that agent's transitions, next observation and reward, from a sample
``z ~ q(z | a)``, the observation and the action. Agents whose transitions follow the
same dynamics and reward function need not be told apart, so the KL term towards the
prior ``N(0, I)`` pulls their embeddings together; agents that differ are pushed apart, as
far as the decoder needs to tell them apart through the sampling noise. The means ``mu``
are then clustered (:mod:`marl.selective.cluster`).

Loss per transition of an alive agent: squared error of next observation and reward
(summed over features), plus ``kl_weight`` times ``KL(q(z | a) || N(0, I))``.

With ``standardise`` (the default) the decoder sees observations scaled to zero mean and
unit variance per feature and predicts the standardised *change* of the observation and
the standardised reward: every target then weighs alike, whatever its units, and the
parts of the dynamics that all agents share (where an action moves an agent) are learned
early and leave the error to what tells agents apart. On ``torch/hidden_colours_v0``
(32 agents, 4 hidden types, random actions) raw targets with 300 steps gave K = 2; these,
with the defaults below (``Z = 4``, 3,000 steps of 64 samples of every agent), give the
four types exactly (``tests/test_selective_mode.py``), and, in an ad-hoc check on
transitions recorded in the warm-up of training runs (two type assignments, four seeds
each; no committed script), 8 of 8 times, where ``Z = 2`` with 1,500 steps of 256 gave
5 of 6.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import nn

from marl.nets import mlp


class Transitions(NamedTuple):
    """Transitions of one group, ``N`` samples of ``A`` agents each.

    Attributes:
        obs: ``[N, A, F]`` float.
        action: ``[N, A]`` int64 (``Discrete``, values ``0 .. n-1``) or ``[N, A, D]`` float.
        next_obs: ``[N, A, F]`` float, the observation the transition returned (before
            any auto-reset, e.g. ``GroupStep.final_obs``).
        reward: ``[N, A]`` float.
        alive: ``[N, A]`` bool, the agent acted in this transition.
    """

    obs: torch.Tensor
    action: torch.Tensor
    next_obs: torch.Tensor
    reward: torch.Tensor
    alive: torch.Tensor


class IdentityFit(NamedTuple):
    """What :func:`fit_identity_model` learned.

    Attributes:
        mean: ``[A, Z]``, agent ``a``'s embedding ``mu_a``.
        log_var: ``[A, Z]``, the log-variance of ``q(z | a)``.
        losses: the training loss at every step.
        gain: how much better the decoder reconstructs held-out transitions from each
            agent's own embedding than from the agents' average embedding, as a fraction
            of the latter's error (about 0 when the agents' transitions follow the same
            rules; ``nan`` without held-out rows). :func:`marl.selective.cluster.choose_k`
            keeps one network below :data:`marl.selective.cluster.GAIN_THRESHOLD`.
    """

    mean: torch.Tensor
    log_var: torch.Tensor
    losses: list[float]
    gain: float = float("nan")

    @property
    def posterior_std(self) -> float:
        """Mean standard deviation of ``q(z | a)`` over agents and axes: the noise through
        which the decoder sees an embedding (``choose_k``'s yardstick)."""
        return float(self.log_var.mul(0.5).exp().mean())


class IdentityModel(nn.Module):
    """Encoder ``one-hot ID -> (mu, log_var)`` and decoder ``(z, obs, action) -> (next_obs,
    reward)``.

    Attributes:
        encoder: ``[*, A] -> [*, 2 Z]`` (mean and log-variance).
        decoder: ``[*, Z + F + action_features] -> [*, F + 1]`` (next observation, reward).
    """

    agent_eye: torch.Tensor

    def __init__(
        self,
        num_agents: int,
        obs_features: int,
        action_features: int,
        embedding_dim: int = 2,
        hidden: Sequence[int] = (64,),
    ) -> None:
        super().__init__()
        self.embedding_dim = embedding_dim
        self.obs_features = obs_features
        self.encoder = mlp(num_agents, hidden, 2 * embedding_dim, "relu", out_gain=1.0)
        self.decoder = mlp(
            embedding_dim + obs_features + action_features, hidden, obs_features + 1, "relu"
        )
        self.register_buffer("agent_eye", torch.eye(num_agents), persistent=False)

    def posterior(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(mu, log_var)``, each ``[A, Z]``."""
        mean, log_var = self.encoder(self.agent_eye).chunk(2, dim=-1)
        return mean, log_var

    def loss(
        self, obs: torch.Tensor, action: torch.Tensor, next_obs: torch.Tensor,
        reward: torch.Tensor, alive: torch.Tensor, kl_weight: float,
        generator: torch.Generator,
    ) -> torch.Tensor:
        """Reconstruction plus ``kl_weight`` x KL, averaged over alive agents of the batch.

        Args:
            obs: ``[N, A, F]``; action: ``[N, A, C]`` (one-hot or continuous);
            next_obs: ``[N, A, F]``; reward: ``[N, A]``; alive: ``[N, A]`` float 0/1.
        """
        mean, log_var = self.posterior()
        noise = torch.randn(obs.shape[:2] + mean.shape[1:], generator=generator)
        z = mean + noise * log_var.mul(0.5).exp()
        predicted = self.decoder(torch.cat([z, obs, action], dim=-1))
        target = torch.cat([next_obs, reward.unsqueeze(-1)], dim=-1)
        reconstruction = (predicted - target).square().sum(-1)
        kl = 0.5 * (mean.square() + log_var.exp() - 1.0 - log_var).sum(-1)
        per_sample = reconstruction + kl_weight * kl
        return (per_sample * alive).sum() / alive.sum().clamp(min=1.0)

    def reconstruction_error(self, z: torch.Tensor, obs: torch.Tensor, action: torch.Tensor,
                             next_obs: torch.Tensor, reward: torch.Tensor,
                             alive: torch.Tensor) -> float:
        """Mean squared error (summed over targets) over alive agents with embeddings
        ``z: [A, Z]`` and no sampling noise."""
        z = z.unsqueeze(0).expand(obs.shape[0], -1, -1)
        predicted = self.decoder(torch.cat([z, obs, action], dim=-1))
        target = torch.cat([next_obs, reward.unsqueeze(-1)], dim=-1)
        error = (predicted - target).square().sum(-1)
        return float((error * alive).sum() / alive.sum().clamp(min=1.0))


def action_features(action: torch.Tensor, num_actions: int | None) -> torch.Tensor:
    """Return actions as float features: ``[N, A] -> [N, A, num_actions]`` one-hot for
    discrete actions, ``[N, A, D]`` continuous ones unchanged."""
    if action.dim() == 2:
        if num_actions is None:
            raise ValueError(
                "discrete actions [N, A] need num_actions (the size of the Discrete space) "
                "for their one-hot encoding; pass num_actions=..."
            )
        return nn.functional.one_hot(action.long(), num_actions).float()
    return action.float()


def standardised(transitions: Transitions) -> Transitions:
    """``transitions`` with obs standardised per feature, ``next_obs`` replaced by the
    standardised change ``next_obs - obs`` and the reward standardised (statistics over
    alive agents; constant features stay 0)."""
    obs, action, next_obs, reward, alive = transitions
    rows = alive.reshape(-1).bool()

    def scale(values: torch.Tensor) -> torch.Tensor:
        flat = values.reshape(rows.numel(), -1).float()
        chosen = flat[rows] if bool(rows.any()) else flat
        mean, std = chosen.mean(0), chosen.std(0, unbiased=False)
        scaled = (flat - mean) / torch.where(std > 1e-8, std, torch.ones_like(std))
        return scaled.reshape(values.shape)

    return Transitions(scale(obs), action, scale(next_obs.float() - obs.float()),
                       scale(reward), alive)


def fit_identity_model(
    transitions: Transitions,
    num_actions: int | None = None,
    embedding_dim: int = 4,
    hidden: Sequence[int] = (64,),
    steps: int = 3000,
    batch_size: int = 64,
    lr: float = 3e-3,
    kl_weight: float = 1e-3,
    seed: int = 0,
    standardise: bool = True,
) -> IdentityFit:
    """Train an :class:`IdentityModel` on ``transitions`` with Adam and return what it learned.

    Args:
        transitions: ``N`` samples of the group's ``A`` agents (:class:`Transitions`).
        num_actions: size of the ``Discrete`` action space; ``None`` for ``[N, A, D]`` actions.
        embedding_dim: ``Z``.
        hidden: hidden layer sizes of encoder and decoder.
        steps: optimiser steps, each on ``batch_size`` samples drawn with replacement.
        lr: Adam learning rate.
        kl_weight: weight of the KL term (the paper's beta). 1e-3 keeps the posterior
            narrow enough that agents of different roles land 4 to 13 posterior standard
            deviations apart on ``toy/hidden_roles`` (1e-2 gave 2 to 4, too close for
            Davies-Bouldin to separate three roles reliably).
        seed: seeds the weights, the batches and the sampling noise (same seed, same result).
        standardise: fit :func:`standardised` transitions (see the module docstring).
    """
    obs, action, next_obs, reward, alive = transitions
    if obs.dim() != 3 or next_obs.shape != obs.shape or reward.shape != obs.shape[:2]:
        raise ValueError(
            "transitions must be obs [N, A, F], next_obs [N, A, F], reward [N, A], alive [N, A]; "
            f"got {list(obs.shape)}, {list(next_obs.shape)}, {list(reward.shape)}, "
            f"{list(alive.shape)}."
        )
    if standardise:
        obs, action, next_obs, reward, alive = standardised(transitions)
    actions = action_features(action, num_actions)
    generator = torch.Generator().manual_seed(seed)
    # One tenth of the rows is held out to measure what the embeddings tell apart.
    order = torch.randperm(obs.shape[0], generator=generator)
    held = order[:obs.shape[0] // 10]
    train = order[obs.shape[0] // 10:]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = IdentityModel(obs.shape[1], obs.shape[2], actions.shape[-1], embedding_dim, hidden)
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    alive_float = alive.float()
    losses: list[float] = []
    for _ in range(steps):
        picks = torch.randint(train.numel(), (min(batch_size, train.numel()),),
                              generator=generator)
        rows = train[picks]
        loss = model.loss(
            obs[rows].float(), actions[rows], next_obs[rows].float(), reward[rows].float(),
            alive_float[rows], kl_weight, generator,
        )
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(float(loss.detach()))
    with torch.no_grad():
        mean, log_var = model.posterior()
        gain = float("nan")
        if held.numel():
            batch = (obs[held].float(), actions[held], next_obs[held].float(),
                     reward[held].float(), alive_float[held])
            own = model.reconstruction_error(mean, *batch)
            pooled = model.reconstruction_error(mean.mean(0, keepdim=True).expand_as(mean),
                                                *batch)
            gain = (pooled - own) / max(pooled, 1e-12)
    return IdentityFit(mean, log_var, losses, gain)


def fit_identity_embeddings(
    transitions: Transitions,
    num_actions: int | None = None,
    embedding_dim: int = 4,
    steps: int = 3000,
    seed: int = 0,
) -> torch.Tensor:
    """Return ``embeddings: [A, Z]``, the encoder means after :func:`fit_identity_model`
    with its defaults for the other options (use that function for them and for the
    posterior width that :func:`marl.selective.cluster.choose_k` takes as ``scale``)."""
    fit = fit_identity_model(
        transitions, num_actions, embedding_dim=embedding_dim, steps=steps, seed=seed
    )
    return fit.mean
