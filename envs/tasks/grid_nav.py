"""``toy/grid_nav``: agents on a grid, each walking to its own goal, seen through a window.

The grid has ``size x size`` cells; cell ``(x, y)`` lies ``x`` cells east and ``y`` cells
north of the south-west corner. Every episode places ``num_agents`` agents and as many
goals on distinct random cells (goal ``i`` belongs to ``agent_i``). An agent that steps
onto its goal gets ``goal_reward``, terminates and leaves the grid; every other step
costs ``step_cost``. Episodes are truncated after ``max_steps`` steps.

``frame`` chooses how agents act and see:

* ``"world"``: actions 0-3 move up (north), down (south), left (west), right (east).
  Observations are in the world frame, north up.
* ``"agent"``: every agent has a heading (east, north, west or south, random at reset).
  Actions 0-3 are forward, rotate left, rotate right, backward; rotations turn by 90
  degrees in place. Observations are in the agent's frame: ahead is up.

An observation is ``[3 * (2v+1)^2 + 2]`` float32 (``v = view``): a window of
``(2v+1) x (2v+1)`` cells around the agent with three channels (blocked: outside the
grid; another agent; the agent's own goal), flattened channel-major, row 0 the farthest
row ahead (world frame: north), column 0 to the left; then the offset from the agent to
its goal divided by ``size - 1``, as ``(east, north)`` in the world frame and as
``(right, ahead)`` in the agent frame. An agent heading north sees exactly what it would
see in the world frame.

Moves are simultaneous. A move fails (the agent stays) when it leaves the grid, when the
target cell holds another agent at the start of the step, or when two agents move to the
same cell.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium.spaces import Box, Discrete
from marl_envs.tasks.base import SpaceTableEnv
from marl_envs.wrappers import ParallelStep

FRAMES = ("world", "agent")

# Unit vectors (east, north) of the four headings, counter-clockwise from east, so that
# turning left is +1 and turning right is -1 (mod 4).
HEADINGS = np.array([[1, 0], [0, 1], [-1, 0], [0, -1]], dtype=np.int64)
NORTH = 1

# World-frame actions: up, down, left, right.
WORLD_MOVES = np.array([[0, 1], [0, -1], [-1, 0], [1, 0]], dtype=np.int64)

# Agent-frame actions.
FORWARD, ROTATE_LEFT, ROTATE_RIGHT, BACKWARD = range(4)

BLOCKED, OTHER_AGENT, OWN_GOAL = range(3)
CHANNELS = 3


class GridNavEnv(SpaceTableEnv):
    """Several agents, one goal each, on a grid seen through a local window.

    Args:
        num_agents: agents ``agent_0 .. agent_{N-1}``.
        size: cells along each side of the grid (at least 2, and room for every agent and
            goal on distinct cells).
        view: window radius; the window spans ``2 * view + 1`` cells along each side.
        frame: ``"world"`` or ``"agent"``, see the module docstring.
        max_steps: episode length before truncation.
        goal_reward: reward for stepping onto the own goal.
        step_cost: subtracted from the reward of every other step.
    """

    def __init__(self, num_agents: int = 3, size: int = 7, view: int = 2, frame: str = "world",
                 max_steps: int = 30, goal_reward: float = 1.0, step_cost: float = 0.01) -> None:
        if frame not in FRAMES:
            raise ValueError(f"frame must be one of {FRAMES}, got {frame!r}.")
        if num_agents < 1 or size < 2 or view < 0 or max_steps < 1:
            raise ValueError(
                "need num_agents >= 1, size >= 2, view >= 0 and max_steps >= 1, got "
                f"num_agents={num_agents}, size={size}, view={view}, max_steps={max_steps}."
            )
        if 2 * num_agents > size * size:
            raise ValueError(
                f"{num_agents} agents and their goals need {2 * num_agents} distinct cells; a "
                f"{size}x{size} grid has {size * size}. Use a larger size or fewer agents."
            )
        self.metadata = {"name": "grid_nav_v0", "render_modes": [], "is_parallelizable": True}
        self.possible_agents = [f"agent_{index}" for index in range(num_agents)]
        self.agents: list[str] = []
        self.size, self.view, self.frame, self.max_steps = size, view, frame, max_steps
        self.goal_reward, self.step_cost = goal_reward, step_cost
        width = 2 * view + 1
        obs_size = CHANNELS * width * width + 2
        self.observation_spaces = {
            agent: Box(-1.0, 1.0, shape=(obs_size,), dtype=np.float32)
            for agent in self.possible_agents
        }
        self.action_spaces = {agent: Discrete(4) for agent in self.possible_agents}
        self._window = _window_offsets(view)  # [4, W, W, 2]
        self._rng = np.random.default_rng()
        self.position = np.zeros((num_agents, 2), dtype=np.int64)
        self.goal = np.zeros((num_agents, 2), dtype=np.int64)
        self.heading = np.full(num_agents, NORTH, dtype=np.int64)
        self.present = np.zeros(num_agents, dtype=bool)
        self._steps = 0

    def reset(
        self, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, dict[str, Any]]]:
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        num_agents = len(self.possible_agents)
        cells = self._rng.choice(self.size * self.size, size=2 * num_agents, replace=False)
        xy = np.stack([cells % self.size, cells // self.size], axis=-1)
        self.position, self.goal = xy[:num_agents].copy(), xy[num_agents:].copy()
        if self.frame == "agent":
            self.heading = self._rng.integers(4, size=num_agents)
        else:
            self.heading = np.full(num_agents, NORTH, dtype=np.int64)
        self.present = np.ones(num_agents, dtype=bool)
        self.agents = list(self.possible_agents)
        self._steps = 0
        return self._observations(self.agents), {agent: {} for agent in self.agents}

    def step(
        self, actions: dict[str, Any]
    ) -> ParallelStep:
        acting = list(self.agents)
        action = np.zeros(len(self.possible_agents), dtype=np.int64)
        for agent in acting:
            action[self.possible_agents.index(agent)] = int(actions[agent])
        self._move(action)
        self._steps += 1
        arrived = self.present & (self.position == self.goal).all(-1)
        time_is_up = self._steps >= self.max_steps
        rewards, terminations, truncations = {}, {}, {}
        for agent in acting:
            index = self.possible_agents.index(agent)
            rewards[agent] = self.goal_reward if arrived[index] else -self.step_cost
            terminations[agent] = bool(arrived[index])
            truncations[agent] = time_is_up and not arrived[index]
        observations = self._observations(acting)
        self.present &= ~arrived
        self.agents = [] if time_is_up else [a for a in acting if not terminations[a]]
        return observations, rewards, terminations, truncations, {a: {} for a in acting}

    def state(self) -> np.ndarray:
        """``[5 * N]``: per agent its position, its goal (both divided by ``size - 1``) and
        1.0 while it is on the grid."""
        scale = max(self.size - 1, 1)
        return np.concatenate(
            [self.position / scale, self.goal / scale, self.present[:, None]], axis=-1
        ).astype(np.float32).reshape(-1)

    def render(self) -> None:
        return None

    def observe(self, agent: str) -> np.ndarray:
        """``agent``'s observation of the current grid (what the next step would show if
        nothing moved)."""
        return self._observations([agent])[agent]

    def _move(self, action: np.ndarray) -> None:
        """Apply ``action: [N]`` to the agents on the grid (simultaneous, collisions fail)."""
        if self.frame == "world":
            delta = WORLD_MOVES[action]
        else:
            step = np.select([action == FORWARD, action == BACKWARD], [1, -1], 0)
            delta = HEADINGS[self.heading] * step[:, None]
            turn = np.select([action == ROTATE_LEFT, action == ROTATE_RIGHT], [1, -1], 0)
            self.heading = np.where(self.present, (self.heading + turn) % 4, self.heading)
        target = np.where(self.present[:, None], self.position + delta, self.position)
        inside = ((target >= 0) & (target < self.size)).all(-1)
        same_cell = (target[:, None, :] == target[None, :, :]).all(-1)  # [N, N]
        onto_other = (target[:, None, :] == self.position[None, :, :]).all(-1)
        others = self.present[None, :] & ~np.eye(len(action), dtype=bool)
        clash = ((same_cell | onto_other) & others).any(-1)
        moves = self.present & inside & ~clash
        self.position = np.where(moves[:, None], target, self.position)

    def _observations(self, agents: list[str]) -> dict[str, np.ndarray]:
        """Window and goal offset of every agent in ``agents`` (see the module docstring)."""
        heading = self.heading if self.frame == "agent" else np.full_like(self.heading, NORTH)
        cells = self.position[:, None, None, :] + self._window[heading]  # [N, W, W, 2]
        inside = ((cells >= 0) & (cells < self.size)).all(-1)
        occupied = np.zeros((self.size, self.size), dtype=bool)
        occupied[self.position[self.present, 0], self.position[self.present, 1]] = True
        clipped = cells.clip(0, self.size - 1)
        window = np.zeros((len(heading), CHANNELS, *inside.shape[1:]), dtype=np.float32)
        window[:, BLOCKED] = ~inside
        window[:, OTHER_AGENT] = inside & occupied[clipped[..., 0], clipped[..., 1]]
        window[:, OTHER_AGENT, self.view, self.view] = 0.0  # the agent itself
        window[:, OWN_GOAL] = (cells == self.goal[:, None, None, :]).all(-1)
        offset = self.goal - self.position  # [N, 2], (east, north)
        right, ahead = HEADINGS[(heading - 1) % 4], HEADINGS[heading]
        if self.frame == "agent":
            offset = np.stack([(offset * right).sum(-1), (offset * ahead).sum(-1)], axis=-1)
        scaled = offset / max(self.size - 1, 1)
        features = np.concatenate([window.reshape(len(heading), -1), scaled], axis=-1)
        features = features.astype(np.float32)
        return {agent: features[self.possible_agents.index(agent)] for agent in agents}


def _window_offsets(view: int) -> np.ndarray:
    """``[4, W, W, 2]`` cell offsets ``(east, north)`` of the window for each heading.

    Row 0 is the farthest row ahead, column 0 the leftmost: cell ``(i, j)`` lies
    ``view - i`` cells ahead and ``j - view`` cells to the right of the agent.
    """
    ahead_steps = view - np.arange(2 * view + 1)
    right_steps = np.arange(2 * view + 1) - view
    offsets = []
    for heading in range(4):
        ahead, right = HEADINGS[heading], HEADINGS[(heading - 1) % 4]
        offsets.append(ahead_steps[:, None, None] * ahead + right_steps[None, :, None] * right)
    return np.stack(offsets)
