"""The MPE tasks ported from ``mpe2``: start states, observations and rewards, batched.

Each scenario mirrors its ``mpe2`` file (``mpe2/<task>/<task>.py``): ``reset_world``
becomes :meth:`sample`, ``observation`` becomes :meth:`observe` (the same features in
the same order), ``reward`` and ``global_reward`` become :meth:`agent_reward` and
:meth:`global_reward`. Agents are ordered as ``mpe2``'s ``possible_agents`` and groups
take consecutive runs of them.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Protocol

import torch
from marl_envs.torch_mpe.world import Physics, WorldState


@dataclass(frozen=True)
class AgentKind:
    """What the agents of one group can do: move, speak, or both."""

    movable: bool
    silent: bool


class Scenario(Protocol):
    """One MPE task, batched over ``E`` copies."""

    name: str
    agents: tuple[str, ...]
    groups: dict[str, tuple[int, ...]]
    """Group name -> the agent indices it holds (consecutive, in agent order)."""
    kinds: dict[str, AgentKind]
    physics: Physics
    dim_c: int
    local_ratio: float | None

    def sample(self, num_envs: int, generator: torch.Generator, device: torch.device,
               dtype: torch.dtype) -> WorldState:
        """Start states of ``num_envs`` copies (``reset_world``)."""
        ...

    def observe(self, world: WorldState) -> dict[str, torch.Tensor]:
        """Per group ``[E, A_g, F_g]`` observations."""
        ...

    def agent_reward(self, world: WorldState) -> torch.Tensor:
        """``[E, n]`` each agent's own reward (``Scenario.reward``)."""
        ...

    def global_reward(self, world: WorldState) -> torch.Tensor | None:
        """``[E]`` the shared reward (``Scenario.global_reward``), or None."""
        ...


def reward(scenario: Scenario, world: WorldState) -> torch.Tensor:
    """``[E, n]`` rewards as ``SimpleEnv`` mixes them: with ``local_ratio`` r, each agent
    gets ``global * (1 - r) + own * r``; without one, its own reward."""
    own = scenario.agent_reward(world)
    shared = scenario.global_reward(world)
    if scenario.local_ratio is None or shared is None:
        return own
    return shared.unsqueeze(-1) * (1 - scenario.local_ratio) + own * scenario.local_ratio


def _uniform_world(num_agents: int, num_landmarks: int, dim_c: int, num_envs: int,
                   generator: torch.Generator, device: torch.device,
                   dtype: torch.dtype) -> WorldState:
    """Agents and landmarks uniform in [-1, 1]^2, at rest and silent; no goals yet."""

    def uniform(*shape: int) -> torch.Tensor:
        draw = torch.rand(shape, generator=generator, device=device, dtype=dtype)
        return draw * 2 - 1

    return WorldState(
        agent_pos=uniform(num_envs, num_agents, 2),
        agent_vel=torch.zeros(num_envs, num_agents, 2, device=device, dtype=dtype),
        comm=torch.zeros(num_envs, num_agents, dim_c, device=device, dtype=dtype),
        landmark_pos=uniform(num_envs, num_landmarks, 2),
        goal=torch.full((num_envs, num_agents), -1, dtype=torch.int64, device=device),
    )


def _relative_landmarks(world: WorldState) -> torch.Tensor:
    """``[E, n, 2 L]`` landmark positions relative to each agent, landmark-major."""
    relative = world.landmark_pos.unsqueeze(1) - world.agent_pos.unsqueeze(2)
    return relative.flatten(2)


@functools.lru_cache(maxsize=64)
def _others(num_agents: int, device: torch.device) -> torch.Tensor:
    """``[n, n - 1]`` for each agent, the other agents in order."""
    order = torch.arange(num_agents, device=device)
    rows = [torch.cat([order[:agent], order[agent + 1:]]) for agent in range(num_agents)]
    return torch.stack(rows) if num_agents > 1 else order.new_zeros((1, 0))


def _set_silent_movers(scenario: object, n: int, size: float, collide: bool) -> None:
    """Give a frozen scenario ``n`` silent, movable agents ``agent_0 ..`` in one group
    ``"agent"``, each of radius ``size``, colliding or not."""
    object.__setattr__(scenario, "physics", Physics(size=(size,) * n, movable=(True,) * n,
                                                    collide=(collide,) * n))
    object.__setattr__(scenario, "agents", tuple(f"agent_{i}" for i in range(n)))
    object.__setattr__(scenario, "groups", {"agent": tuple(range(n))})
    object.__setattr__(scenario, "kinds", {"agent": AgentKind(movable=True, silent=True)})


@dataclass(frozen=True)
class SimpleSpread:
    """``simple_spread_v3``: N agents cover N landmarks and avoid each other.

    Observation of agent i (``6 N`` features): own velocity, own position, landmark
    positions relative to it, other agents' positions relative to it, other agents'
    communication (always zero: the agents are silent).
    """

    num_agents: int = 3
    local_ratio: float | None = 0.5
    name: str = "simple_spread_v3"
    dim_c: int = 2
    physics: Physics = field(init=False)
    agents: tuple[str, ...] = field(init=False)
    groups: dict[str, tuple[int, ...]] = field(init=False)
    kinds: dict[str, AgentKind] = field(init=False)

    def __post_init__(self) -> None:
        _set_silent_movers(self, self.num_agents, size=0.15, collide=True)

    def sample(self, num_envs: int, generator: torch.Generator, device: torch.device,
               dtype: torch.dtype) -> WorldState:
        return _uniform_world(self.num_agents, self.num_agents, self.dim_c, num_envs, generator,
                              device, dtype)

    def observe(self, world: WorldState) -> dict[str, torch.Tensor]:
        others = _others(self.num_agents, world.agent_pos.device)
        other_pos = world.agent_pos[:, others] - world.agent_pos.unsqueeze(2)
        features = [world.agent_vel, world.agent_pos, _relative_landmarks(world),
                    other_pos.flatten(2), world.comm[:, others].flatten(2)]
        return {"agent": torch.cat(features, dim=-1)}

    def agent_reward(self, world: WorldState) -> torch.Tensor:
        """Minus the number of other agents each agent overlaps (``dist < r_a + r_b``)."""
        distance, min_distance = self.physics.pair_distances(world.agent_pos)
        touching = (distance < min_distance).sum(-1) - 1  # minus the agent itself
        return -touching.to(world.agent_pos.dtype)

    def global_reward(self, world: WorldState) -> torch.Tensor:
        """Minus the sum over landmarks of the distance to the closest agent."""
        delta = world.landmark_pos.unsqueeze(2) - world.agent_pos.unsqueeze(1)
        return -torch.linalg.vector_norm(delta, dim=-1).amin(dim=-1).sum(-1)


def hidden_types(num_agents: int, num_types: int, type_seed: int) -> tuple[int, ...]:
    """A balanced type per agent (type ``t`` for ``num_agents // num_types`` or one more
    agents), shuffled by ``type_seed``."""
    balanced = torch.arange(num_agents) % num_types
    order = torch.randperm(num_agents, generator=torch.Generator().manual_seed(type_seed))
    return tuple(int(t) for t in balanced[order])


@dataclass(frozen=True)
class HiddenColours:
    """``hidden_colours_v0`` (no ``mpe2`` counterpart): ``N`` agents of ``K`` hidden types
    and ``K`` landmarks, one of each colour; an agent of type ``t`` is rewarded for
    standing on landmark ``t``, and nothing it observes says which type it is.

    Observation of every agent (``4 + 2 K`` features): own velocity, own position, the
    ``K`` landmarks' positions relative to it in colour order. Reward of agent ``i``: minus
    its distance to the landmark of its own colour (its own reward only, no team term).
    Agents do not collide, so ``N`` scales to hundreds of agents. One network without
    agent IDs sees every agent alike and can serve only one colour well; one network per
    type (or IDs that a network learns to map to types) is what the task needs.
    """

    num_agents: int = 8
    num_types: int = 2
    type_seed: int = 0
    local_ratio: float | None = None
    name: str = "hidden_colours_v0"
    dim_c: int = 2
    physics: Physics = field(init=False)
    agents: tuple[str, ...] = field(init=False)
    groups: dict[str, tuple[int, ...]] = field(init=False)
    kinds: dict[str, AgentKind] = field(init=False)
    types: tuple[int, ...] = field(init=False)

    def __post_init__(self) -> None:
        _set_silent_movers(self, self.num_agents, size=0.05, collide=False)
        object.__setattr__(self, "types",
                           hidden_types(self.num_agents, self.num_types, self.type_seed))

    def sample(self, num_envs: int, generator: torch.Generator, device: torch.device,
               dtype: torch.dtype) -> WorldState:
        return _uniform_world(self.num_agents, self.num_types, self.dim_c, num_envs,
                              generator, device, dtype)

    def observe(self, world: WorldState) -> dict[str, torch.Tensor]:
        features = [world.agent_vel, world.agent_pos, _relative_landmarks(world)]
        return {"agent": torch.cat(features, dim=-1)}

    def agent_reward(self, world: WorldState) -> torch.Tensor:
        """Minus each agent's distance to the landmark of its colour."""
        types = torch.tensor(self.types, device=world.agent_pos.device)
        goal = world.landmark_pos[:, types]  # [E, n, 2]
        return -torch.linalg.vector_norm(goal - world.agent_pos, dim=-1)

    def global_reward(self, world: WorldState) -> torch.Tensor | None:
        return None


SPEAKER_LISTENER_COLORS = ((0.65, 0.15, 0.15), (0.15, 0.65, 0.15), (0.15, 0.15, 0.65))
REFERENCE_COLORS = ((0.75, 0.25, 0.25), (0.25, 0.75, 0.25), (0.25, 0.25, 0.75))


def _goal_color(colors: tuple[tuple[float, ...], ...], goal: torch.Tensor,
                dtype: torch.dtype) -> torch.Tensor:
    """``[*B, 3]`` colour of landmark ``goal: [*B]`` (every goal here names a landmark)."""
    return _color_table(colors, goal.device, dtype)[goal]


@functools.lru_cache(maxsize=16)
def _color_table(colors: tuple[tuple[float, ...], ...], device: torch.device,
                 dtype: torch.dtype) -> torch.Tensor:
    return torch.tensor(colors, dtype=dtype, device=device)


@dataclass(frozen=True)
class SimpleSpeakerListener:
    """``simple_speaker_listener_v4``: a still speaker names a landmark, a silent listener
    goes there.

    Observations: speaker (3) the goal landmark's colour; listener (11) own velocity,
    landmark positions relative to it, the speaker's utterance. Both agents get minus
    the squared distance from the listener to the goal landmark.
    """

    name: str = "simple_speaker_listener_v4"
    dim_c: int = 3
    local_ratio: float | None = None
    agents: tuple[str, ...] = ("speaker_0", "listener_0")
    groups: dict[str, tuple[int, ...]] = field(
        default_factory=lambda: {"speaker": (0,), "listener": (1,)})
    kinds: dict[str, AgentKind] = field(default_factory=lambda: {
        "speaker": AgentKind(movable=False, silent=False),
        "listener": AgentKind(movable=True, silent=True)})
    physics: Physics = field(default_factory=lambda: Physics(
        size=(0.075, 0.075), movable=(False, True), collide=(False, False)))

    def sample(self, num_envs: int, generator: torch.Generator, device: torch.device,
               dtype: torch.dtype) -> WorldState:
        world = _uniform_world(2, 3, self.dim_c, num_envs, generator, device, dtype)
        target = torch.randint(3, (num_envs,), generator=generator, device=device)
        goal = torch.stack([target, torch.full_like(target, -1)], dim=-1)
        return world._replace(goal=goal)

    def observe(self, world: WorldState) -> dict[str, torch.Tensor]:
        speaker = _goal_color(SPEAKER_LISTENER_COLORS, world.goal[:, :1], world.agent_pos.dtype)
        landmarks = _relative_landmarks(world)[:, 1:]
        listener = torch.cat([world.agent_vel[:, 1:], landmarks, world.comm[:, :1]], dim=-1)
        return {"speaker": speaker, "listener": listener}

    def agent_reward(self, world: WorldState) -> torch.Tensor:
        target = world.landmark_pos.gather(
            1, world.goal[:, 0].view(-1, 1, 1).expand(-1, 1, 2)).squeeze(1)
        squared = (world.agent_pos[:, 1] - target).square().sum(-1)
        return (-squared).unsqueeze(-1).expand(-1, 2)

    def global_reward(self, world: WorldState) -> torch.Tensor | None:
        return None


@dataclass(frozen=True)
class SimpleReference:
    """``simple_reference_v3``: two agents that move and speak; each knows which landmark
    the other must reach.

    Observation of agent i (21): own velocity, landmark positions relative to it, the
    colour of its goal landmark (where the other agent must go), the other's utterance.
    Own reward: minus the other agent's distance to agent i's goal landmark; the global
    reward is the mean of both.
    """

    local_ratio: float | None = 0.5
    name: str = "simple_reference_v3"
    dim_c: int = 10
    agents: tuple[str, ...] = ("agent_0", "agent_1")
    groups: dict[str, tuple[int, ...]] = field(default_factory=lambda: {"agent": (0, 1)})
    kinds: dict[str, AgentKind] = field(
        default_factory=lambda: {"agent": AgentKind(movable=True, silent=False)})
    physics: Physics = field(default_factory=lambda: Physics(
        size=(0.05, 0.05), movable=(True, True), collide=(False, False)))

    def sample(self, num_envs: int, generator: torch.Generator, device: torch.device,
               dtype: torch.dtype) -> WorldState:
        world = _uniform_world(2, 3, self.dim_c, num_envs, generator, device, dtype)
        goal = torch.randint(3, (num_envs, 2), generator=generator, device=device)
        return world._replace(goal=goal)

    def observe(self, world: WorldState) -> dict[str, torch.Tensor]:
        color = _goal_color(REFERENCE_COLORS, world.goal, world.agent_pos.dtype)
        other_comm = world.comm.flip(1)
        features = [world.agent_vel, _relative_landmarks(world), color, other_comm]
        return {"agent": torch.cat(features, dim=-1)}

    def agent_reward(self, world: WorldState) -> torch.Tensor:
        target = world.landmark_pos.gather(1, world.goal.unsqueeze(-1).expand(-1, -1, 2))
        return -torch.linalg.vector_norm(world.agent_pos.flip(1) - target, dim=-1)

    def global_reward(self, world: WorldState) -> torch.Tensor:
        return self.agent_reward(world).mean(-1)

