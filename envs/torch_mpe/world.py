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
            speed = velocity.norm(dim=-1, keepdim=True)
            velocity = torch.where(speed > self.max_speed, velocity / speed * self.max_speed,
                                   velocity)
        if not all(self.movable):
            movable = torch.tensor(self.movable, device=force.device).unsqueeze(-1)
            position = torch.where(movable, position, world.agent_pos)
            velocity = torch.where(movable, velocity, world.agent_vel)
        return world._replace(agent_pos=position, agent_vel=velocity, comm=comm)

    def contact_forces(self, position: torch.Tensor) -> torch.Tensor:
        """``[E, n, 2]`` summed contact force on each agent from every other colliding agent.

        For a pair at distance ``d`` whose radii sum to ``d_min`` the force is
        ``contact_force * delta / d * k * log(1 + exp(-(d - d_min) / k))``, ``k`` the
        contact margin, pushing the two apart (``get_collision_force`` in ``mpe2``).
        """
        device, dtype = position.device, position.dtype
        collide = torch.tensor(self.collide, device=device)
        size = torch.tensor(self.size, device=device, dtype=dtype)
        eye = torch.eye(self.num_agents, dtype=torch.bool, device=device)
        pairs = collide.unsqueeze(0) & collide.unsqueeze(1) & ~eye
        delta = position.unsqueeze(2) - position.unsqueeze(1)  # [E, a, b, 2]: p_a - p_b
        distance = delta.norm(dim=-1).masked_fill(eye, 1.0)  # 1 on the diagonal: no 0/0
        overlap = -(distance - (size.unsqueeze(0) + size.unsqueeze(1))) / self.contact_margin
        penetration = torch.logaddexp(torch.zeros_like(overlap), overlap) * self.contact_margin
        pair_force = self.contact_force * delta / distance.unsqueeze(-1) * penetration.unsqueeze(-1)
        return torch.where(pairs.unsqueeze(-1), pair_force, 0.0).sum(dim=2)


MOVES = ((0.0, 0.0), (-1.0, 0.0), (1.0, 0.0), (0.0, -1.0), (0.0, 1.0))
"""Direction of each discrete move: no-op, left, right, down, up (``mpe2``'s order)."""


def discrete_move(move: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``[*B, 2]`` unit direction of discrete moves ``move: [*B]`` (values 0..4)."""
    table = torch.tensor(MOVES, dtype=dtype, device=move.device)
    return table[move]


def continuous_move(action: torch.Tensor) -> torch.Tensor:
    """``[*B, 2]`` direction of continuous moves ``action: [*B, 5]`` in [0, 1].

    ``mpe2`` ignores the first entry and takes ``(a2 - a1, a4 - a3)``, so each axis has a
    push in both directions.
    """
    return torch.stack([action[..., 2] - action[..., 1], action[..., 4] - action[..., 3]], -1)
