"""Batched MPE physics: the state of ``E`` worlds as tensors and one step of ``mpe2``'s world.

Follows ``mpe2/_mpe_utils/core.py`` (``World.step``) term by term, for every copy at
once: the force on an agent is its action times its acceleration plus the soft contact
forces of every other colliding agent; positions move with the old velocity, then the
velocity is damped, pushed by ``force / mass * dt`` and capped at ``max_speed``.

Landmarks are static and collide with nothing in the tasks ported here
(``simple_spread``, ``simple_speaker_listener``, ``simple_reference``), so they are
positions only and contacts are computed between colliding agents.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import NamedTuple

import torch


class WorldState(NamedTuple):
    """The state of ``E`` worlds of ``n`` agents and ``L`` landmarks.

    Attributes:
        agent_pos: ``[E, n, 2]`` agent positions.
        agent_vel: ``[E, n, 2]`` agent velocities.
        comm: ``[E, n, C]`` what each agent says (zeros for silent agents).
        landmark_pos: ``[E, L, 2]`` landmark positions.
        goal: ``[E, n]`` int64, the landmark each agent's goal names (``goal_b`` in
            ``mpe2``), or -1 where the task gives the agent none.
    """

    agent_pos: torch.Tensor
    agent_vel: torch.Tensor
    comm: torch.Tensor
    landmark_pos: torch.Tensor
    goal: torch.Tensor


@dataclass(frozen=True)
class Physics:
    """Per-agent physical properties and the world constants of ``mpe2``.

    Attributes:
        size: agent radius, one per agent.
        movable: whether each agent moves (``mpe2``'s speaker does not).
        collide: whether each agent takes part in contacts.
        accel: action sensitivity (``mpe2`` uses 5.0 when ``agent.accel`` is None).
        max_speed: speed cap, or None for no cap (every agent of these tasks).
        mass: agent mass.
        dt, damping, contact_force, contact_margin: ``mpe2.World`` constants.
    """

    size: tuple[float, ...]
    movable: tuple[bool, ...]
    collide: tuple[bool, ...]
    accel: float = 5.0
    max_speed: float | None = None
    mass: float = 1.0
    dt: float = 0.1
    damping: float = 0.25
    contact_force: float = 1e2
    contact_margin: float = 1e-3

    @property
    def num_agents(self) -> int:
        return len(self.size)

    def step(self, world: WorldState, force: torch.Tensor, comm: torch.Tensor) -> WorldState:
        """One ``World.step``: new positions, velocities and communication.

        Args:
            world: the current state.
            force: ``[E, n, 2]`` action force (already multiplied by ``accel``).
            comm: ``[E, n, C]`` communication each agent sends in this step.
        """
        if sum(self.collide) > 1:
            force = force + self.contact_forces(world.agent_pos)
        position = world.agent_pos + world.agent_vel * self.dt
        velocity = world.agent_vel * (1 - self.damping) + force / self.mass * self.dt
        if self.max_speed is not None:
            speed = torch.linalg.vector_norm(velocity, dim=-1, keepdim=True)
            velocity = torch.where(speed > self.max_speed, velocity / speed * self.max_speed,
                                   velocity)
        if not all(self.movable):
            movable = _movable(self, force.device)
            position = torch.where(movable, position, world.agent_pos)
            velocity = torch.where(movable, velocity, world.agent_vel)
        return world._replace(agent_pos=position, agent_vel=velocity, comm=comm)

    def contact_forces(self, position: torch.Tensor) -> torch.Tensor:
        """``[E, n, 2]`` summed contact force on each agent from every other colliding agent.

        For a pair at distance ``d`` whose radii sum to ``d_min`` the force is
        ``contact_force * delta / d * k * log(1 + exp(-(d - d_min) / k))``, ``k`` the
        contact margin, pushing the two apart (``get_collision_force`` in ``mpe2``).
        """
        pairs, eye, min_distance = _pair_constants(self, position.device, position.dtype)
        delta = position.unsqueeze(2) - position.unsqueeze(1)  # [E, a, b, 2]: p_a - p_b
        distance = torch.linalg.vector_norm(delta, dim=-1).masked_fill(eye, 1.0)  # no 0/0
        overlap = (min_distance - distance) / self.contact_margin
        # softplus is log(1 + exp(x)) (mpe2's logaddexp(0, x)); above its threshold of 20 it
        # returns x, which differs by under 2e-9 before the factor contact_margin.
        penetration = torch.nn.functional.softplus(overlap) * self.contact_margin
        scale = self.contact_force * penetration / distance
        return torch.where(pairs, scale, 0.0).unsqueeze(-1).mul(delta).sum(dim=2)

    def pair_distances(self, position: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``([E, n, n] distances between agents, [n, n] sums of their radii)``."""
        _, _, min_distance = _pair_constants(self, position.device, position.dtype)
        delta = position.unsqueeze(2) - position.unsqueeze(1)
        return torch.linalg.vector_norm(delta, dim=-1), min_distance


@functools.lru_cache(maxsize=64)
def _pair_constants(physics: Physics, device: torch.device, dtype: torch.dtype
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``[n, n]`` colliding pairs (a != b), the diagonal, and sums of radii."""
    collide = torch.tensor(physics.collide, device=device)
    size = torch.tensor(physics.size, device=device, dtype=dtype)
    eye = torch.eye(physics.num_agents, dtype=torch.bool, device=device)
    pairs = collide.unsqueeze(0) & collide.unsqueeze(1) & ~eye
    return pairs, eye, size.unsqueeze(0) + size.unsqueeze(1)


MOVES = ((0.0, 0.0), (-1.0, 0.0), (1.0, 0.0), (0.0, -1.0), (0.0, 1.0))
"""Direction of each discrete move: no-op, left, right, down, up (``mpe2``'s order)."""


def discrete_move(move: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``[*B, 2]`` unit direction of discrete moves ``move: [*B]`` (values 0..4)."""
    return _move_table(move.device, dtype)[move]


@functools.lru_cache(maxsize=16)
def _move_table(device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    return torch.tensor(MOVES, dtype=dtype, device=device)


def continuous_move(action: torch.Tensor) -> torch.Tensor:
    """``[*B, 2]`` direction of continuous moves ``action: [*B, 5]`` in [0, 1].

    ``mpe2`` ignores the first entry and takes ``(a2 - a1, a4 - a3)``, so each axis has a
    push in both directions.
    """
    return torch.stack([action[..., 2] - action[..., 1], action[..., 4] - action[..., 3]], -1)


@functools.lru_cache(maxsize=16)
def _movable(physics: Physics, device: torch.device) -> torch.Tensor:
    """``[n, 1]`` bool, which agents move."""
    return torch.tensor(physics.movable, device=device).unsqueeze(-1)
