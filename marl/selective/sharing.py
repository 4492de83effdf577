"""``sharing.json``: which network each agent uses, written once per run, and its plot.

Layout (the top-level keys other than ``"_details"`` are group names)::

    {
      "agent": {"agent_0": 0, "agent_1": 1, "agent_2": 0},
      "_details": {
        "agent": {"num_networks": 2, "score": 0.31, "score_name": "davies_bouldin",
                  "scores": {"2": 0.31, "3": 0.52}, "gain": 0.97,
                  "embeddings": {"agent_0": [0.1, -1.2], ...}}
      }
    }

The plain mapping is what a run needs to rebuild its networks; ``"_details"`` records
how it was found (``score`` is ``null`` where Davies-Bouldin is undefined: K = 1 or A;
``scores`` holds every K that ``auto`` tried; ``gain`` is the identity model's held-out
gain, which decides whether the agents differ at all).
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from marl.atomic import atomic_write_bytes, atomic_write_text
from marl.selective._checks import check_index
from marl.selective.cluster import Clustering

DETAILS = "_details"
"""The key under which ``sharing.json`` keeps embeddings and scores."""


@dataclass(frozen=True)
class GroupSharing:
    """One group's assignment.

    Attributes:
        agents: agent names in slot order.
        index: network of each agent, canonical labels ``0 .. K-1``.
        embeddings: ``[A][Z]`` identity embeddings (empty lists if unknown).
        num_networks: ``K``.
        score: Davies-Bouldin score of the assignment, ``nan`` where undefined.
        scores: ``{K: score}`` of every K that ``auto`` tried (empty otherwise).
        gain: the identity model's held-out gain (``IdentityFit.gain``), ``nan`` if unknown.
    """

    agents: tuple[str, ...]
    index: tuple[int, ...]
    embeddings: tuple[tuple[float, ...], ...]
    num_networks: int
    score: float = math.nan
    scores: tuple[tuple[int, float], ...] = ()
    gain: float = math.nan

    @classmethod
    def from_clustering(
        cls, agents: tuple[str, ...], embeddings: torch.Tensor, clustering: Clustering,
        gain: float = math.nan,
    ) -> GroupSharing:
        """Record ``clustering`` of the group's ``agents`` and their ``embeddings: [A, Z]``."""
        return cls(
            agents=tuple(agents),
            index=tuple(clustering.index.tolist()),
            embeddings=tuple(tuple(row) for row in embeddings.tolist()),
            num_networks=clustering.num_networks,
            score=clustering.score,
            scores=tuple(sorted(clustering.scores.items())),
            gain=gain,
        )

    @property
    def mapping(self) -> dict[str, int]:
        """``{agent name: network index}``."""
        return dict(zip(self.agents, self.index, strict=True))


def write_sharing(path: Path, groups: dict[str, GroupSharing]) -> None:
    """Write ``groups`` to ``path`` atomically in the layout above."""
    document: dict[str, Any] = {}
    details: dict[str, Any] = {}
    for group, sharing in groups.items():
        if group == DETAILS:
            raise ValueError(
                f"a group may not be called {DETAILS!r}: sharing.json keeps details there."
            )
        check_index(torch.tensor(sharing.index), sharing.num_networks)
        document[group] = sharing.mapping
        details[group] = {
            "num_networks": sharing.num_networks,
            "score": None if math.isnan(sharing.score) else sharing.score,
            "score_name": "davies_bouldin",
            "scores": {str(k): (None if math.isnan(v) or math.isinf(v) else v)
                       for k, v in sharing.scores},
            "gain": None if math.isnan(sharing.gain) else sharing.gain,
            "embeddings": dict(zip(sharing.agents, map(list, sharing.embeddings), strict=False)),
        }
    document[DETAILS] = details
    atomic_write_text(path, json.dumps(document, indent=2) + "\n")


def read_sharing(path: Path) -> dict[str, GroupSharing]:
    """Read a ``sharing.json`` written by :func:`write_sharing`.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: if it is not JSON, or a group's mapping is not ``{agent: int}`` with
            labels ``0 .. K-1`` all used.
    """
    try:
        document = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise FileNotFoundError(
            f"{path} does not exist; it is written when selective sharing picks the networks."
        ) from None
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON ({error}); delete it to pick again.") from None
    if not isinstance(document, dict):
        raise ValueError(
            f"{path} must hold a JSON object of groups; got {type(document).__name__}."
        )
    details = document.get(DETAILS, {})
    return {
        group: _read_group(path, group, mapping, details.get(group, {}))
        for group, mapping in document.items()
        if group != DETAILS
    }


def _read_group(path: Path, group: str, mapping: Any, details: dict[str, Any]) -> GroupSharing:
    """Check and convert one group's ``{agent: network}`` and its details."""
    if not (
        isinstance(mapping, dict) and mapping
        and all(type(value) is int for value in mapping.values())
    ):
        raise ValueError(
            f"{path}: group {group!r} must map agent names to integer network indices, "
            f"e.g. {{\"agent_0\": 0}}; got {mapping!r}."
        )
    index = tuple(mapping.values())
    try:
        num_networks = check_index(torch.tensor(index))
    except ValueError as error:
        raise ValueError(f"{path}: group {group!r}: {error}") from None
    embeddings = details.get("embeddings", {})
    score, gain = details.get("score"), details.get("gain")
    scores = details.get("scores") or {}
    return GroupSharing(
        agents=tuple(mapping),
        index=index,
        embeddings=tuple(tuple(float(x) for x in embeddings.get(a, ())) for a in mapping),
        num_networks=num_networks,
        score=math.nan if score is None else float(score),
        scores=tuple(sorted((int(k), math.inf if v is None else float(v))
                            for k, v in scores.items())),
        gain=math.nan if gain is None else float(gain),
    )


def plot_embeddings(path: Path, sharing: GroupSharing, title: str = "") -> None:
    """Save a PNG of the embeddings projected on their first two principal axes, one
    colour per network, each point labelled with its agent's name."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on training machines
    from matplotlib import pyplot

    points = torch.tensor(sharing.embeddings, dtype=torch.float64)
    centred = points - points.mean(dim=0)
    # PCA via SVD; pad to two columns when Z = 1 or all points coincide.
    _, _, components = torch.linalg.svd(centred, full_matrices=False)
    projected = centred @ components[:2].T
    if projected.shape[1] < 2:
        projected = torch.cat([projected, torch.zeros(len(points), 2 - projected.shape[1])], 1)
    figure, axes = pyplot.subplots(figsize=(4.5, 4))
    colours = pyplot.get_cmap("tab10")
    for (x, y), agent, network in zip(
        projected.tolist(), sharing.agents, sharing.index, strict=True
    ):
        axes.scatter([x], [y], color=colours(network % 10), s=40)
        axes.annotate(agent, (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
    axes.set_xlabel("principal axis 1")
    axes.set_ylabel("principal axis 2")
    axes.set_title(title or f"agent embeddings, K = {sharing.num_networks}")
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    pyplot.close(figure)
    atomic_write_bytes(Path(path), buffer.getvalue())
