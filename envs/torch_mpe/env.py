"""``E`` copies of an MPE task in one set of tensors, implementing ``BatchedEnv``.

Every copy starts together and runs episodes of exactly ``max_cycles`` steps (none of
the ported tasks terminates early), so the copies stay in lockstep: the step counter is
one Python int, the auto-reset of all copies happens at the same step, and stepping
never reads a value back from the device. Nothing loops over copies in Python; on
CUDA a step is a fixed sequence of kernel launches.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

import gymnasium
import torch
from gymnasium.spaces import Box, Discrete
from marl_envs.core import BatchedReset, BatchedStep, GroupObs, GroupSpec, GroupStep
from marl_envs.errors import ActionError
from marl_envs.torch_mpe.scenarios import AgentKind, Scenario, reward
from marl_envs.torch_mpe.world import WorldState, continuous_move, discrete_move


class Transition(NamedTuple):
    """One step of every copy before any auto-reset.

    Attributes:
        obs: per group ``[E, A_g, F_g]`` observations after the step.
        reward: ``[E, n]`` reward of every agent, in agent order.
        truncated: whether this step reached ``max_cycles`` (the same for every copy).
    """

    obs: dict[str, torch.Tensor]
    reward: torch.Tensor
    truncated: bool


class TorchMPEEnv:
    """``num_envs`` copies of an MPE scenario stepped as tensors on ``device``.

    Observations, rewards and dynamics match ``mpe2`` (checked step by step in
    ``tests/envs/test_torch_mpe.py``); copies are seeded from one torch generator, so
    ``reset(seed)`` makes a run reproducible but copy ``i`` is not the ``mpe2`` episode
    of seed ``seed + i``.

    Args:
        scenario: the task (see :mod:`marl_envs.torch_mpe.scenarios`).
        num_envs: number of copies ``E``.
        max_cycles: episode length; every episode is truncated after this many steps.
        continuous_actions: ``Box(0, 1)`` actions instead of ``Discrete`` ones.
        device: where every tensor lives.
        dtype: floating dtype of the simulation and of observations and rewards
            (float32; float64 to compare against ``mpe2`` to the last digits).
        include_state: return the global state (every agent's observation,
            concatenated in agent order, as ``mpe2``'s ``state()``).

    Attributes:
        world: the current :class:`WorldState` of every copy (replace it with
            :meth:`set_world`).
    """

    def __init__(self, scenario: Scenario, num_envs: int = 1, max_cycles: int = 25,
                 continuous_actions: bool = False, device: torch.device | str = "cpu",
                 dtype: torch.dtype = torch.float32, include_state: bool = True) -> None:
        if not isinstance(num_envs, int) or num_envs < 1:
            raise ValueError(f"num_envs must be a positive int, got {num_envs!r}.")
        if not isinstance(max_cycles, int) or max_cycles < 1:
            raise ValueError(f"max_cycles must be a positive int, got {max_cycles!r}.")
        if not dtype.is_floating_point:
            raise ValueError(f"dtype must be a floating dtype (float32, float64), got {dtype}.")
        self.scenario = scenario
        self.num_envs = num_envs
        self.max_cycles = max_cycles
        self.continuous_actions = continuous_actions
        self.device = torch.device(device)
        self.dtype = dtype
        self.include_state = include_state
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(int(torch.randint(2**62, ())))
        self.world = scenario.sample(num_envs, self.generator, self.device, dtype)
        self.steps = 0
        self.groups = self._group_specs()
        state_size = sum(spec.num_agents * spec.obs_shape[0] for spec in self.groups.values())
        self.state_shape: tuple[int, ...] | None = (state_size,) if include_state else None

    # ------------------------------------------------------------------ protocol
    def reset(self, seed: int | None = None) -> BatchedReset:
        """Start new episodes in every copy; a seed re-seeds the copies' generator."""
        if seed is not None:
            self.generator.manual_seed(seed)
        self.world = self.scenario.sample(self.num_envs, self.generator, self.device, self.dtype)
        self.steps = 0
        obs = self.observe()
        return BatchedReset({name: self._group_obs(o) for name, o in obs.items()},
                            self._state(obs))

    def step(self, actions: Mapping[str, torch.Tensor]) -> BatchedStep:
        """Step every copy; after step ``max_cycles`` every copy is truncated and reset.

        Args:
            actions: per group ``[E, A_g]`` integers (Discrete) or ``[E, A_g, d]`` floats
                in [0, 1] (Box; values outside are clipped, as ``mpe2`` does).
        """
        transition = self.advance(actions)
        final_state = self._state(transition.obs)
        next_obs, next_state = transition.obs, final_state
        if transition.truncated:
            self.world = self.scenario.sample(self.num_envs, self.generator, self.device,
                                              self.dtype)
            self.steps = 0
            next_obs = self.observe()
            next_state = self._state(next_obs)
        groups = {}
        for name, agents in self.scenario.groups.items():
            shape = (self.num_envs, len(agents))
            groups[name] = GroupStep(
                reward=transition.reward[:, agents[0]:agents[-1] + 1],
                terminated=torch.zeros(shape, dtype=torch.bool, device=self.device),
                truncated=torch.full(shape, transition.truncated, device=self.device),
                final_obs=transition.obs[name],
                next=self._group_obs(next_obs[name]),
            )
        env_done = torch.full((self.num_envs,), transition.truncated, device=self.device)
        return BatchedStep(groups, env_done, next_state, final_state)

    def close(self) -> None:
        """Nothing to release; present for the protocol."""

    # ------------------------------------------------------------- simulation
    def advance(self, actions: Mapping[str, torch.Tensor]) -> Transition:
        """Step every copy without resetting any (what :meth:`step` builds on)."""
        self.world, obs, rewards = self.transition(self.world, actions)
        self.steps += 1
        return Transition(obs, rewards, self.steps >= self.max_cycles)

    def transition(self, world: WorldState, actions: Mapping[str, torch.Tensor],
                   check: bool = True) -> tuple[WorldState, dict[str, torch.Tensor],
                                                torch.Tensor]:
        """One step of ``world`` as a pure tensor function: ``(next world, per group
        [E, A_g, F_g] observations, [E, n] rewards)``. Touches no attribute, so
        ``torch.compile`` can capture it; ``check=False`` skips the action checks (whose
        range check reads values back)."""
        force, comm = self.decode_actions(actions, check)
        world = self.scenario.physics.step(world, force, comm)
        return world, self.scenario.observe(world), reward(self.scenario, world)

    def observe(self) -> dict[str, torch.Tensor]:
        """Per group ``[E, A_g, F_g]`` observations of the current :attr:`world`."""
        return self.scenario.observe(self.world)

    def decode_actions(self, actions: Mapping[str, torch.Tensor], check: bool = True
                       ) -> tuple[torch.Tensor, torch.Tensor]:
        """Actions to ``(force [E, n, 2], utterance [E, n, C])``, as ``SimpleEnv._set_action``.

        A discrete action of an agent that moves and speaks is ``move + 5 * word``; the
        continuous one is ``[5 move entries, C word entries]``.
        """
        if check and set(actions) != set(self.groups):
            raise ActionError(f"expected actions for groups {list(self.groups)}, got "
                              f"{list(actions)}; pass one tensor per group, keyed by group name.")
        forces, words = [], []
        for name, spec in self.groups.items():
            action = self._checked_action(name, spec, actions[name]) if check else actions[name]
            force, word = self._decode_group(self.scenario.kinds[name], action)
            forces.append(force)
            words.append(word)
        return torch.cat(forces, dim=1), torch.cat(words, dim=1)

    def _decode_group(self, kind: AgentKind, action: torch.Tensor
                      ) -> tuple[torch.Tensor, torch.Tensor]:
        dim_c, dtype = self.scenario.dim_c, self.dtype
        batch = action.shape[:2]
        direction = torch.zeros(*batch, 2, device=self.device, dtype=dtype)
        word = torch.zeros(*batch, dim_c, device=self.device, dtype=dtype)
        if self.continuous_actions:
            action = action.to(dtype).clamp(0.0, 1.0)
            if kind.movable:
                direction = continuous_move(action[..., :5])
                action = action[..., 5:]
            if not kind.silent:
                word = action
        else:
            if kind.movable:
                direction = discrete_move(action % 5, dtype)
            if not kind.silent:
                code = action // 5 if kind.movable else action
                word = (code.unsqueeze(-1) == torch.arange(dim_c, device=self.device)).to(dtype)
        return direction * self.scenario.physics.accel, word

    def _checked_action(self, name: str, spec: GroupSpec, action: torch.Tensor) -> torch.Tensor:
        space = spec.action_space
        expected = (self.num_envs, spec.num_agents, *(space.shape or ()))
        if not isinstance(action, torch.Tensor) or tuple(action.shape) != expected:
            got = list(action.shape) if isinstance(action, torch.Tensor) else type(action).__name__
            raise ActionError(f"actions of group {name!r} must be a tensor of shape "
                              f"{list(expected)} ([E, A_g] for Discrete, [E, A_g, d] for Box), "
                              f"got {got}.")
        action = action.to(self.device)
        if isinstance(space, Discrete):
            if action.is_floating_point() or action.is_complex():
                raise ActionError(f"actions of group {name!r} must be integers (Discrete"
                                  f"({space.n})), got {action.dtype}.")
            # Checking the range reads the tensor back; free on CPU, a sync on CUDA.
            if action.device.type == "cpu" and bool(((action < 0) | (action >= space.n)).any()):
                raise ActionError(f"actions of group {name!r} must lie in [0, {space.n}), got "
                                  f"values from {int(action.min())} to {int(action.max())}.")
        return action

    # ------------------------------------------------------------------ helpers
    def _group_specs(self) -> dict[str, GroupSpec]:
        obs = self.scenario.observe(self.scenario.sample(1, self.generator, self.device,
                                                         self.dtype))
        specs = {}
        for name, agents in self.scenario.groups.items():
            features = obs[name].shape[-1]
            specs[name] = GroupSpec(
                name=name, agents=tuple(self.scenario.agents[i] for i in agents),
                obs_shape=(features,),
                obs_mask=torch.ones(len(agents), features, dtype=torch.bool),
                action_space=action_space(self.scenario.kinds[name], self.scenario.dim_c,
                                          self.continuous_actions),
            )
        return specs

    def _group_obs(self, obs: torch.Tensor) -> GroupObs:
        alive = torch.ones(obs.shape[:2], dtype=torch.bool, device=self.device)
        return GroupObs(obs, alive, None)

    def _state(self, obs: dict[str, torch.Tensor]) -> torch.Tensor | None:
        if not self.include_state:
            return None
        return torch.cat([group_obs.flatten(1) for group_obs in obs.values()], dim=-1)

    def set_world(self, world: WorldState, steps: int = 0) -> None:
        """Replace the state of every copy and the step counter (e.g. to mirror ``mpe2``)."""
        expected = self.world.agent_pos.shape
        if world.agent_pos.shape != expected:
            raise ValueError(f"world.agent_pos must have shape {list(expected)}, got "
                             f"{list(world.agent_pos.shape)}.")
        self.world = WorldState(*(
            t.to(self.device, self.dtype) if t.is_floating_point() else t.to(self.device)
            for t in world))
        self.steps = steps


def action_space(kind: AgentKind, dim_c: int, continuous: bool) -> gymnasium.Space:
    """The ``mpe2`` action space of an agent: 5 moves, ``dim_c`` words, or both."""
    if continuous:
        size = (5 if kind.movable else 0) + (0 if kind.silent else dim_c)
        return Box(low=0, high=1, shape=(size,))
    moves = 5 if kind.movable else 1
    return Discrete(moves * (1 if kind.silent else dim_c))
