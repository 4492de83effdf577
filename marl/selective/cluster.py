"""Cluster agent embeddings into networks: k-means, the Davies-Bouldin score, and K = 1.

:func:`choose_k` turns embeddings ``[A, Z]`` into the group's ``index: [A]``. With a
given K it runs :func:`kmeans`; with ``"auto"`` it first asks whether the agents differ at
all (the identity model's held-out ``gain`` below :data:`GAIN_THRESHOLD`, or without one
:func:`embeddings_alike`), and if they do picks the K in ``2 .. A-1`` with the
lowest Davies-Bouldin score (Davies & Bouldin 1979), as the selective-sharing paper
suggests when the number of agent types is unknown. K = A is left out of the search because
every singleton clustering scores a perfect 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from marl.selective._checks import check_num_clusters

GAIN_THRESHOLD = 0.05
"""Agents count as alike when their own embeddings reconstruct held-out transitions less
than 5% better than the agents' average embedding does (``IdentityFit.gain``). Measured
ad hoc (no committed script) with random actions, 10k transitions, two seeds each, the
identity model's defaults: agents alike by construction gave -0.002 to 0.006 (torch
spread N = 3 and 6, simple_reference, hidden_roles with one role, hidden_colours with one
type); agents of different types 0.78 to 1.0 (hidden_roles with three roles,
hidden_colours N = 16 with 2 types and N = 32 with 4)."""

ALIKE_THRESHOLD = 1.0
"""Agents count as alike when every embedding lies within this many posterior standard
deviations of their mean (see :func:`embeddings_alike`)."""


@dataclass(frozen=True)
class Clustering:
    """The outcome of :func:`choose_k`.

    Attributes:
        index: ``[A]`` int64 canonical labels (agent 0 in network 0, then first appearance).
        num_networks: ``K``.
        score: Davies-Bouldin score of the chosen clustering (lower is better; ``nan`` for
            K = 1 or K = A, where it is undefined).
        scores: ``{K: score}`` for every K tried by ``"auto"`` (empty for a given K).
    """

    index: torch.Tensor
    num_networks: int
    score: float
    scores: dict[int, float] = field(default_factory=dict)


def canonical_labels(labels: torch.Tensor) -> torch.Tensor:
    """Relabel ``labels: [A]`` by order of first appearance: ``[2, 2, 0, 1] -> [0, 0, 1, 2]``."""
    mapping: dict[int, int] = {}
    for label in labels.tolist():
        mapping.setdefault(label, len(mapping))
    return torch.tensor([mapping[label] for label in labels.tolist()], dtype=torch.int64)


def _plus_plus_centres(points: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """k-means++ seeding (Arthur & Vassilvitskii 2007): each next centre drawn with
    probability proportional to the squared distance to the nearest centre so far."""
    first = int(torch.randint(points.shape[0], (1,), generator=generator))
    centres = [points[first]]
    for _ in range(1, k):
        nearest = torch.cdist(points, torch.stack(centres)).min(dim=1).values.square()
        # Fewer distinct points than k leaves all distances 0: then draw any point.
        weights = torch.ones_like(nearest) if float(nearest.sum()) <= 0.0 else nearest
        centres.append(points[int(torch.multinomial(weights, 1, generator=generator))])
    return torch.stack(centres)


def _lloyd(points: torch.Tensor, centres: torch.Tensor, iterations: int) -> torch.Tensor:
    """Lloyd iterations from ``centres: [K, Z]``; returns labels ``[A]``. An emptied
    cluster is moved to the point farthest from its centre, so K clusters stay K."""
    labels = torch.cdist(points, centres).argmin(dim=1)
    for _ in range(iterations):
        for cluster in range(centres.shape[0]):
            members = points[labels == cluster]
            if members.shape[0] == 0:
                far = torch.cdist(points, centres).min(dim=1).values.argmax()
                centres[cluster] = points[far]
            else:
                centres[cluster] = members.mean(dim=0)
        new_labels = torch.cdist(points, centres).argmin(dim=1)
        if torch.equal(new_labels, labels):
            break
        labels = new_labels
    return labels


def inertia(points: torch.Tensor, labels: torch.Tensor) -> float:
    """Sum of squared distances of ``points: [A, Z]`` to their cluster means."""
    total = 0.0
    for cluster in labels.unique():
        members = points[labels == cluster]
        total += float((members - members.mean(dim=0)).square().sum())
    return total


def kmeans(
    points: torch.Tensor, k: int, seed: int = 0, restarts: int = 10, iterations: int = 100
) -> torch.Tensor:
    """Cluster ``points: [A, Z]`` into ``k`` groups; return canonical labels ``[A]``.

    k-means++ seeding and Lloyd iterations, ``restarts`` times; the run of lowest inertia
    wins (the first on ties). The same seed gives the same labels.

    Raises:
        ValueError: unless ``1 <= k <= A``.
    """
    check_num_clusters(k, points.shape[0])
    points = points.detach().double()
    generator = torch.Generator().manual_seed(seed)
    best_labels, best_inertia = torch.zeros(points.shape[0], dtype=torch.int64), math.inf
    for _ in range(restarts):
        labels = _lloyd(points, _plus_plus_centres(points, k, generator), iterations)
        run_inertia = inertia(points, labels)
        if labels.unique().numel() == k and run_inertia < best_inertia - 1e-12:
            best_labels, best_inertia = labels, run_inertia
    return canonical_labels(best_labels)


def davies_bouldin(points: torch.Tensor, labels: torch.Tensor, scale: float = 0.0) -> float:
    """Davies-Bouldin score of ``labels: [A]`` on ``points: [A, Z]`` (lower is better).

    The mean over clusters ``i`` of ``max_{j != i} (s_i + s_j) / d(c_i, c_j)``, with
    ``s_i`` the mean distance of cluster ``i``'s points to its centroid ``c_i``. Two
    clusters with the same centroid score ``inf``. Needs at least two clusters.

    With ``scale > 0`` each point stands for a Gaussian ``N(point, scale^2 I)`` (an agent's
    posterior) and its distance to the centroid is the root-mean-square one over samples,
    ``sqrt(|point - c|^2 + Z scale^2)``. Plain Davies-Bouldin (``scale = 0``) rewards
    splitting any cluster into singletons, whose spread is 0, so it keeps improving as K
    grows even when the split agents are closer than the noise through which the decoder
    sees them; with the posterior's width a singleton has spread ``sqrt(Z) scale``, and
    splitting agents that the decoder cannot tell apart scores badly.
    """
    points = points.detach().double()
    clusters = labels.unique()
    if clusters.numel() < 2:
        raise ValueError(
            f"the Davies-Bouldin score needs 2 or more clusters; got labels {labels.tolist()}."
        )
    centroids = torch.stack([points[labels == c].mean(dim=0) for c in clusters])
    noise = points.shape[1] * scale**2
    spread = torch.stack([
        ((points[labels == c] - centroids[i]).square().sum(dim=1) + noise).sqrt().mean()
        for i, c in enumerate(clusters)
    ])
    separation = torch.cdist(centroids, centroids)
    ratio = (spread[:, None] + spread[None, :]) / separation
    ratio.fill_diagonal_(-math.inf)
    ratio = torch.nan_to_num(ratio, nan=0.0, posinf=math.inf)  # 0/0: identical singletons
    return float(ratio.max(dim=1).values.mean())


def embeddings_alike(
    embeddings: torch.Tensor, scale: float, threshold: float = ALIKE_THRESHOLD
) -> bool:
    """Whether all agents' embeddings ``[A, Z]`` are indistinguishable at ``scale``.

    The decoder never sees a mean ``mu_a``, only samples ``z ~ N(mu_a, sigma^2)``. If every
    mean lies within ``threshold`` standard deviations ``sigma`` (``scale``) of the common
    centre, samples of different agents overlap so much that the decoder cannot, and so
    did not learn to, tell the agents apart: the transitions looked alike and one network
    fits them all. When agents do differ the reconstruction term pushes their means apart
    and shrinks ``sigma``, so the ratio grows by orders of magnitude (measured in
    ``tests/test_selective.py``). Without a fitted posterior, ``scale = 1`` is the prior's.
    """
    centre = embeddings.mean(dim=0, keepdim=True)
    radius = float((embeddings - centre).norm(dim=1).max())
    return radius < threshold * scale


def choose_k(
    embeddings: torch.Tensor,
    k: int | str = "auto",
    scale: float = 1.0,
    seed: int = 0,
    threshold: float = ALIKE_THRESHOLD,
    gain: float | None = None,
) -> Clustering:
    """Cluster agent embeddings ``[A, Z]`` into networks.

    Args:
        embeddings: ``[A, Z]``, e.g. ``fit_identity_model(...).mean``.
        k: the number of networks ``1 .. A``, or ``"auto"``: 1 if :func:`embeddings_alike`,
            else the K in ``2 .. A-1`` of lowest Davies-Bouldin score (2 when ``A = 2``).
        scale: the standard deviation that makes two embeddings distinguishable, e.g.
            ``IdentityFit.posterior_std``; 1.0 (the prior's) by default.
        seed: seed of k-means.
        threshold: see :func:`embeddings_alike`.
        gain: the identity model's held-out gain (``IdentityFit.gain``); when given (and
            not nan), ``"auto"`` keeps one network if it is below :data:`GAIN_THRESHOLD`
            instead of asking :func:`embeddings_alike`.

    Raises:
        ValueError: for ``k`` outside ``[1, A]`` or neither an integer nor ``"auto"``.
    """
    num_agents = embeddings.shape[0]
    if k != "auto":
        check_num_clusters(k, num_agents)  # type: ignore[arg-type]
        labels = kmeans(embeddings, int(k), seed)
        score = davies_bouldin(embeddings, labels, scale) if 1 < int(k) < num_agents else math.nan
        return Clustering(labels, int(k), score, {})
    if gain is not None and not math.isnan(gain):
        alike = gain < GAIN_THRESHOLD
    else:
        alike = embeddings_alike(embeddings, scale, threshold)
    if num_agents == 1 or alike:
        return Clustering(torch.zeros(num_agents, dtype=torch.int64), 1, math.nan, {})
    if num_agents == 2:
        return Clustering(torch.tensor([0, 1]), 2, math.nan, {})
    scores: dict[int, float] = {}
    candidates: dict[int, torch.Tensor] = {}
    for candidate in range(2, num_agents):
        candidates[candidate] = kmeans(embeddings, candidate, seed)
        scores[candidate] = davies_bouldin(embeddings, candidates[candidate], scale)
    best = min(scores, key=lambda candidate: (scores[candidate], candidate))
    return Clustering(candidates[best], best, scores[best], scores)
