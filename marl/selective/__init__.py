"""Selective parameter sharing (Christianos et al. 2021): K networks for A agents.

The pieces, in the order a run uses them (:mod:`marl.selective.runtime` drives them):
the warm-up transitions (:class:`~marl.selective.runtime.TransitionRecorder`, or
:func:`collect_random_transitions` with random actions), :func:`fit_identity_model`
(agent-identity embeddings from a variational encoder), :func:`choose_k` (k-means,
Davies-Bouldin, or a single network when agents look alike), :func:`write_sharing`
(``sharing.json`` and a plot in the run directory), and :mod:`marl.selective.share`
(K networks on any stacked group network, gathered by a fixed agent -> network index).
"""

from marl.selective.cluster import (
    Clustering,
    canonical_labels,
    choose_k,
    davies_bouldin,
    embeddings_alike,
    kmeans,
)
from marl.selective.collect import collect_random_transitions
from marl.selective.identity import (
    IdentityFit,
    IdentityModel,
    Transitions,
    fit_identity_embeddings,
    fit_identity_model,
)
from marl.selective.sharing import GroupSharing, plot_embeddings, read_sharing, write_sharing

__all__ = [
    "Clustering",
    "GroupSharing",
    "IdentityFit",
    "IdentityModel",
    "Transitions",
    "canonical_labels",
    "choose_k",
    "collect_random_transitions",
    "davies_bouldin",
    "embeddings_alike",
    "fit_identity_embeddings",
    "fit_identity_model",
    "kmeans",
    "plot_embeddings",
    "read_sharing",
    "write_sharing",
]
