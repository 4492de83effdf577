"""Entity rows from a flat observation: :class:`EntityLayout` and :class:`EntitySlice`.

A flat observation ``[..., D]`` often lists entities one after another. A layout says where:
each :class:`EntitySlice` is ``count`` consecutive blocks of ``width`` features starting at
``start``, all of one ``kind``. :meth:`EntityLayout.rows` turns the observation into entity
rows ``[..., N, F]`` for the entity encoder (:mod:`marl.nets.entity`): each row holds its
features, zero-padded to the widest slice, then a one-hot of its kind. For mpe2's
``simple_spread_v3`` with ``N=3`` (``[vel(2), pos(2), landmarks(3x2), others(2x2),
comm(4)]``)::

    EntityLayout((
        EntitySlice("self", start=0, count=1, width=4, always_present=True),
        EntitySlice("landmark", start=4, count=3, width=2),
        EntitySlice("agent", start=10, count=2, width=2),
    ))

gives 6 rows of ``4 + 3`` features. A row whose features are all zero is an absent entity
(the encoder masks all-zero rows): its kind one-hot is left zero too, unless its slice is
``always_present`` (the agent's own state may well be zero). Features no slice names (the
silent communication channels above) are dropped.

Presets for the mpe2 tasks (:data:`marl.group_nets.ENTITY_LAYOUT_BUILDERS` names them):
:func:`mpe_spread_layout` (landmarks and other agents interchangeable, one kind each),
:func:`mpe_reference_layout` and :func:`mpe_listener_layout` (speaker-listener's listener),
where each landmark is its own kind: its colour is fixed by its index and is what the goal
and the messages name, so the landmarks must stay distinguishable.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class EntitySlice:
    """``count`` entities of one ``kind``, ``width`` features each, from feature ``start``."""

    kind: str
    start: int
    count: int
    width: int
    always_present: bool = False

    @property
    def stop(self) -> int:
        """One past the last feature of the slice."""
        return self.start + self.count * self.width


@dataclass(frozen=True)
class EntityLayout:
    """Which slices of a flat observation are entities, and of which kind.

    Attributes:
        slices: the entity slices, in the order their rows appear.
    """

    slices: tuple[EntitySlice, ...]

    def __post_init__(self) -> None:
        if not self.slices:
            raise ValueError("an EntityLayout needs at least one EntitySlice; got none.")
        for item in self.slices:
            if item.start < 0 or item.count < 1 or item.width < 1:
                raise ValueError(
                    f"entity slice {item.kind!r} needs start >= 0, count >= 1 and width >= 1; "
                    f"got start={item.start}, count={item.count}, width={item.width}."
                )
        ordered = sorted(self.slices, key=lambda item: item.start)
        for before, after in itertools.pairwise(ordered):
            if after.start < before.stop:
                raise ValueError(
                    f"entity slices {before.kind!r} (features {before.start}..{before.stop - 1}) "
                    f"and {after.kind!r} (from {after.start}) overlap; each feature belongs to "
                    "at most one slice."
                )

    @property
    def kinds(self) -> list[str]:
        """The entity kinds, in order of first appearance (the kind one-hot's order)."""
        return list(dict.fromkeys(item.kind for item in self.slices))

    @property
    def num_entities(self) -> int:
        """``N``, the number of rows."""
        return sum(item.count for item in self.slices)

    @property
    def entity_features(self) -> int:
        """``F``, features per row: the widest slice plus one per kind."""
        return max(item.width for item in self.slices) + len(self.kinds)

    @property
    def stop(self) -> int:
        """One past the last feature any slice reads: the smallest observation it fits."""
        return max(item.stop for item in self.slices)

    @property
    def shape(self) -> tuple[int, int]:
        """``(N, F)``, the shape :meth:`rows` gives per observation."""
        return self.num_entities, self.entity_features

    def check(self, obs_size: int, where: str = "the observation") -> None:
        """Raise ``ValueError`` when a slice reaches past an observation of ``obs_size``."""
        for item in self.slices:
            if item.stop > obs_size:
                raise ValueError(
                    f"entity slice {item.kind!r} needs features {item.start}..{item.stop - 1} "
                    f"({item.count} x {item.width} from {item.start}), but {where} has "
                    f"{obs_size} features (0..{obs_size - 1}); fix start, count or width."
                )

    def rows(self, obs: torch.Tensor) -> torch.Tensor:
        """Entity rows of ``obs: [..., D]``: ``[..., N, F]`` (features, padding, kind one-hot).

        Raises:
            ValueError: when the layout does not fit ``D``.
        """
        self.check(obs.shape[-1])
        width, kinds = max(item.width for item in self.slices), self.kinds
        batch = obs.shape[:-1]
        parts = []
        for item in self.slices:
            features = obs[..., item.start : item.stop].reshape(*batch, item.count, item.width)
            present = torch.ones_like(features[..., :1]) if item.always_present else (
                (features != 0).any(dim=-1, keepdim=True).to(obs.dtype)
            )
            kind = torch.zeros(*batch, item.count, len(kinds), dtype=obs.dtype, device=obs.device)
            kind[..., kinds.index(item.kind)] = present[..., 0]
            padding = features.new_zeros(*batch, item.count, width - item.width)
            parts.append(torch.cat([features, padding, kind], dim=-1))
        return torch.cat(parts, dim=-2)


def mpe_spread_layout(num_agents: int) -> EntityLayout:
    """The layout of mpe2's ``simple_spread_v3`` observation with ``N = num_agents``."""
    landmarks_start = 4
    others_start = landmarks_start + 2 * num_agents
    slices: Sequence[EntitySlice] = (
        EntitySlice("self", 0, 1, 4, always_present=True),
        EntitySlice("landmark", landmarks_start, num_agents, 2),
        *((EntitySlice("agent", others_start, num_agents - 1, 2),) if num_agents > 1 else ()),
    )
    return EntityLayout(tuple(slices))


def _numbered_landmarks(start: int, count: int) -> tuple[EntitySlice, ...]:
    """``count`` landmarks of 2-D relative positions from ``start``, one kind each
    (``landmark_0``, ...): the landmark's index is its identity."""
    return tuple(EntitySlice(f"landmark_{index}", start + 2 * index, 1, 2)
                 for index in range(count))


def mpe_reference_layout() -> EntityLayout:
    """mpe2 ``simple_reference_v3``: ``[vel(2), landmarks(3x2), goal colour(3),
    message(10)]`` (21 features): own velocity, three numbered landmarks, the colour of
    the other agent's goal and the other agent's message, as rows."""
    return EntityLayout((
        EntitySlice("self", 0, 1, 2, always_present=True),
        *_numbered_landmarks(2, 3),
        EntitySlice("goal", 8, 1, 3),
        EntitySlice("message", 11, 1, 10),
    ))


def mpe_listener_layout() -> EntityLayout:
    """mpe2 ``simple_speaker_listener_v4``, the listener: ``[vel(2), landmarks(3x2),
    message(3)]`` (11 features). The speaker sees one goal colour and has no layout."""
    return EntityLayout((
        EntitySlice("self", 0, 1, 2, always_present=True),
        *_numbered_landmarks(2, 3),
        EntitySlice("message", 8, 1, 3),
    ))
