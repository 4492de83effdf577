"""Agent-centric frames of reference for flat observations: :class:`FrameSpec`.

A spec says where the 2-D quantities sit in an agent's flat observation ``[F]``: the
agent's own world position, world positions of other entities (landmarks, other agents,
goals), free 2-D vectors (velocities, offsets that are already relative) and, optionally,
where the agent's heading can be read. :meth:`FrameSpec.apply` then expresses

* every point relative to the agent: ``p - own_position``;
* when a heading is given, every point and vector rotated into the agent's heading, so
  that ``x`` points ahead and ``y`` to the agent's left (a rotation by ``-heading``,
  the heading measured counter-clockwise from the world's ``x`` axis).

Every other feature passes unchanged, the agent's own position included. For example
mpe2's ``simple_spread_v3`` with ``N=3`` observes ``[vel(2), pos(2), landmarks(3x2),
others(2x2), comm(4)]`` with landmarks and others already relative, so rotating into the
direction of motion is::

    FrameSpec(vectors=(0, 4, 6, 8, 10, 12), heading_vector=0)
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

import torch

# Below this length a heading vector (e.g. the velocity of an agent at rest) gives no
# direction; the observation is then left unrotated.
MIN_HEADING_NORM = 1e-8


@dataclass(frozen=True)
class FrameSpec:
    """Which slices of a flat observation are positions, vectors and the heading.

    Every entry is the start index of a 2-D ``(x, y)`` pair in the observation, except
    ``heading_angle``, the index of one feature.

    Attributes:
        position: the agent's own world position; needed when ``points`` is not empty.
        points: world positions of other entities; they become offsets from ``position``
            (then rotated, with a heading).
        vectors: 2-D vectors that are only rotated (velocities, relative offsets).
        heading_angle: feature holding the agent's heading in radians, counter-clockwise
            from the world ``x`` axis.
        heading_vector: a 2-D vector pointing along the heading (e.g. the velocity, or
            ``(cos, sin)`` of the heading); when shorter than 1e-8 no rotation is applied.
    """

    position: int | None = None
    points: tuple[int, ...] = ()
    vectors: tuple[int, ...] = ()
    heading_angle: int | None = None
    heading_vector: int | None = None

    def __post_init__(self) -> None:
        if not self.points and not self.vectors:
            raise ValueError(
                "an agent-centric FrameSpec needs at least one entry in points (world "
                "positions to make relative) or vectors (2-D vectors to rotate); got neither."
            )
        if self.points and self.position is None:
            raise ValueError(
                f"points {list(self.points)} are made relative to the agent's own position, "
                "but position is None; give position (start index of the agent's (x, y))."
            )
        if self.heading_angle is not None and self.heading_vector is not None:
            raise ValueError(
                "give the heading once: heading_angle (an angle feature) or heading_vector "
                f"(a 2-D direction), not both (got {self.heading_angle} and "
                f"{self.heading_vector})."
            )
        pairs = [*self.points, *self.vectors]
        if len(set(pairs)) != len(pairs) or any(
            abs(a - b) < 2 for i, a in enumerate(pairs) for b in pairs[i + 1:]
        ):
            raise ValueError(
                f"points {list(self.points)} and vectors {list(self.vectors)} overlap: every "
                "(x, y) pair must start at least 2 features after another."
            )

    @property
    def rotates(self) -> bool:
        """Whether points and vectors are rotated into the agent's heading."""
        return self.heading_angle is not None or self.heading_vector is not None

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> FrameSpec:
        """A spec from a config mapping such as ``{position: 2, points: [4, 6]}``."""
        names = [f.name for f in fields(cls)]
        for key in values:
            if key not in names:
                close = difflib.get_close_matches(str(key), names, n=1, cutoff=0.5)
                hint = f" Did you mean {close[0]!r}?" if close else ""
                raise ValueError(f"unknown agent-centric key {key!r}.{hint} Keys: {names}.")
        kwargs: dict[str, Any] = {}
        for key, value in values.items():
            if key in ("points", "vectors"):
                kwargs[key] = tuple(_index(key, item) for item in _sequence(key, value))
            else:
                kwargs[key] = None if value is None else _index(key, value)
        return cls(**kwargs)

    def check(self, obs_size: int, where: str) -> None:
        """Raise ``ValueError`` when an index lies outside an observation of ``obs_size``."""
        pairs: dict[str, list[int | None]] = {
            "position": [self.position], "points": list(self.points),
            "vectors": list(self.vectors), "heading_vector": [self.heading_vector],
        }
        for name, starts in pairs.items():
            for start in starts:
                if start is not None and start + 2 > obs_size:
                    raise ValueError(
                        f"agent-centric {name} starting at {start} needs features {start} and "
                        f"{start + 1}, but {where} has {obs_size} features (0..{obs_size - 1})."
                    )
        if self.heading_angle is not None and self.heading_angle >= obs_size:
            raise ValueError(
                f"agent-centric heading_angle {self.heading_angle} is outside {where}, which "
                f"has {obs_size} features."
            )

    def apply(self, obs: torch.Tensor) -> torch.Tensor:
        """Express ``obs: [..., F]`` in the agent's frame; returns a new ``[..., F]`` tensor."""
        out = obs.clone()
        if self.position is not None:
            own = obs[..., self.position:self.position + 2]
            for start in self.points:
                out[..., start:start + 2] = obs[..., start:start + 2] - own
        if not self.rotates:
            return out
        cos, sin = self._heading(obs)
        for start in (*self.points, *self.vectors):
            x, y = out[..., start].clone(), out[..., start + 1].clone()
            out[..., start] = cos * x + sin * y
            out[..., start + 1] = -sin * x + cos * y
        return out

    def _heading(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Cosine and sine of the heading, each ``[...]``."""
        if self.heading_angle is not None:
            angle = obs[..., self.heading_angle]
            return torch.cos(angle), torch.sin(angle)
        assert self.heading_vector is not None
        direction = obs[..., self.heading_vector:self.heading_vector + 2]
        norm = direction.norm(dim=-1)
        still = norm < MIN_HEADING_NORM
        safe = torch.where(still, torch.ones_like(norm), norm)
        cos = torch.where(still, torch.ones_like(norm), direction[..., 0] / safe)
        sin = torch.where(still, torch.zeros_like(norm), direction[..., 1] / safe)
        return cos, sin


def _sequence(key: str, value: Any) -> Sequence[Any]:
    if isinstance(value, (list, tuple)):
        return value
    raise ValueError(f"agent-centric {key} must be a list of start indices, got {value!r}; "
                     f"for example {key}: [4, 6].")


def _index(key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"agent-centric {key} must hold non-negative int feature indices, got "
                         f"{value!r}.")
    return value
