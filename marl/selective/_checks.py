"""Checks of a cluster count and of an agent -> network index, in one set of words."""

from __future__ import annotations

import torch


def check_num_clusters(num_clusters: int, num_agents: int) -> None:
    """Raise ``ValueError`` unless ``1 <= num_clusters <= num_agents``."""
    if isinstance(num_clusters, bool) or not isinstance(num_clusters, int):
        raise ValueError(
            f"the number of networks K must be an integer or 'auto'; got {num_clusters!r}."
        )
    if not 1 <= num_clusters <= num_agents:
        raise ValueError(
            f"the number of networks K must be in [1, {num_agents}] (1 = shared, "
            f"{num_agents} = one per agent) for a group of {num_agents} agents; "
            f"got {num_clusters}."
        )


def check_index(index: torch.Tensor, num_networks: int | None = None) -> int:
    """Check ``index: [A]`` (agent -> network) and return ``K``, its number of networks.

    Labels must be integers in ``[0, K)`` and every network must have at least one agent
    (an empty network would be weights nobody trains).

    Raises:
        ValueError: for a non-1-D or empty index, a label outside ``[0, K)``, or an unused
            network.
    """
    if index.dim() != 1 or index.numel() == 0 or index.dtype.is_floating_point:
        raise ValueError(
            "index must be a non-empty 1-D integer tensor [A] (agent -> network); got "
            f"dtype {index.dtype} and shape {list(index.shape)}."
        )
    num_agents = int(index.numel())
    if num_networks is None:
        # Inferred from the labels: a K above A shows up below as networks without agents.
        num_networks = max(int(index.max()) + 1, 1)
    else:
        check_num_clusters(num_networks, num_agents)
    if int(index.min()) < 0 or int(index.max()) >= num_networks:
        raise ValueError(
            f"index labels must be in [0, {num_networks}); got {index.tolist()}."
        )
    unused = sorted(set(range(num_networks)) - set(index.tolist()))
    if unused:
        raise ValueError(
            f"every one of the {num_networks} networks needs at least one agent; networks "
            f"{unused} have none in index {index.tolist()}. Relabel with canonical_labels()."
        )
    return num_networks
