"""toy/grid_nav (marl_envs.tasks.grid_nav): moves, frames, rewards, episode ends."""

from __future__ import annotations

import numpy as np
import pytest
from marl_envs.tasks import GridNavEnv
from marl_envs.tasks.grid_nav import BACKWARD, FORWARD, ROTATE_LEFT, ROTATE_RIGHT
from pettingzoo.test import parallel_api_test

UP, DOWN, LEFT, RIGHT = range(4)
EAST, NORTH, WEST, SOUTH = range(4)


def _placed(frame: str, positions: list[tuple[int, int]], goals: list[tuple[int, int]],
            headings: list[int] | None = None, **kwargs: int) -> GridNavEnv:
    """A reset env with agents and goals put where the test says."""
    env = GridNavEnv(num_agents=len(positions), frame=frame, **kwargs)
    env.reset(seed=0)
    env.position = np.array(positions)
    env.goal = np.array(goals)
    if headings is not None:
        env.heading = np.array(headings)
    return env


def _window(obs: np.ndarray, view: int) -> np.ndarray:
    """``[3, W, W]`` channels of an observation."""
    width = 2 * view + 1
    return obs[: 3 * width * width].reshape(3, width, width)


@pytest.mark.parametrize("frame", ["world", "agent"])
def test_parallel_api(frame: str) -> None:
    parallel_api_test(GridNavEnv(frame=frame, size=4, max_steps=10), num_cycles=100)


def test_world_moves_by_hand() -> None:
    env = _placed("world", [(2, 2), (0, 0), (4, 4)], [(6, 6), (6, 5), (6, 4)])
    env.step({"agent_0": UP, "agent_1": LEFT, "agent_2": RIGHT})
    # Up is north (+y); moving off the grid fails.
    assert env.position.tolist() == [[2, 3], [0, 0], [5, 4]]
    env.step({"agent_0": DOWN, "agent_1": RIGHT, "agent_2": DOWN})
    assert env.position.tolist() == [[2, 2], [1, 0], [5, 3]]


def test_blocked_moves_by_hand() -> None:
    # agent_0 walks into agent_1's cell; agent_1 and agent_2 both aim at (3, 2).
    env = _placed("world", [(1, 1), (2, 1), (4, 2)], [(6, 6), (6, 5), (6, 4)])
    env.step({"agent_0": RIGHT, "agent_1": UP, "agent_2": LEFT})
    assert env.position.tolist() == [[1, 1], [2, 2], [3, 2]]
    env = _placed("world", [(2, 1), (3, 2), (4, 1)], [(6, 6), (6, 5), (6, 4)])
    env.step({"agent_0": RIGHT, "agent_1": DOWN, "agent_2": LEFT})
    assert env.position.tolist() == [[2, 1], [3, 2], [4, 1]]


def test_agent_moves_turn_and_follow_the_heading() -> None:
    env = _placed("agent", [(3, 3)], [(0, 0)], headings=[EAST])
    env.step({"agent_0": FORWARD})
    assert env.position.tolist() == [[4, 3]]
    env.step({"agent_0": ROTATE_LEFT})  # now facing north, in place
    assert env.position.tolist() == [[4, 3]] and env.heading.tolist() == [NORTH]
    env.step({"agent_0": FORWARD})
    assert env.position.tolist() == [[4, 4]]
    env.step({"agent_0": ROTATE_RIGHT})
    env.step({"agent_0": ROTATE_RIGHT})  # facing south
    assert env.heading.tolist() == [SOUTH]
    env.step({"agent_0": BACKWARD})  # backward from south is north
    assert env.position.tolist() == [[4, 5]] and env.heading.tolist() == [SOUTH]


def test_goal_offset_in_world_and_agent_frames() -> None:
    # Goal 2 east and 1 north of the agent; size 7, so offsets are divided by 6.
    world = _placed("world", [(2, 2)], [(4, 3)])
    obs, *_ = world.step({"agent_0": LEFT})  # moves to (1, 2): offset (3, 1)
    assert obs["agent_0"][-2:] * 6 == pytest.approx([3, 1])
    expected = {NORTH: [3, 1], EAST: [-1, 3], SOUTH: [-3, -1], WEST: [1, -3]}  # (right, ahead)
    for heading, offset in expected.items():
        env = _placed("agent", [(1, 2)], [(4, 3)], headings=[(heading + 1) % 4])
        obs, *_ = env.step({"agent_0": ROTATE_RIGHT})
        assert env.heading.tolist() == [heading]
        assert obs["agent_0"][-2:] * 6 == pytest.approx(offset)


def test_agent_window_is_the_world_window_rotated() -> None:
    positions, goals = [(1, 1), (2, 2), (0, 2)], [(3, 1), (6, 6), (5, 5)]
    world = _window(_placed("world", positions, goals, view=2).observe("agent_0"), 2)
    # North up: row i holds y = 1 + 2 - i, column j holds x = 1 + j - 2.
    assert world[0, :, 0].tolist() == [1.0] * 5 and world[0, 4].tolist() == [1.0] * 5
    assert world[0, :4, 1:].sum() == 0  # inside the grid nothing is blocked
    assert np.argwhere(world[1]).tolist() == [[1, 1], [1, 3]]  # agent_2, agent_1
    assert np.argwhere(world[2]).tolist() == [[2, 4]]  # own goal (3, 1): 2 east
    for heading in range(4):
        env = _placed("agent", positions, goals, headings=[heading, 0, 0], view=2)
        # Facing east the agent sees the world turned a quarter counter-clockwise.
        expected = np.rot90(world, k=(NORTH - heading) % 4, axes=(1, 2))
        np.testing.assert_array_equal(_window(env.observe("agent_0"), 2), expected)


def test_rewards_termination_and_truncation() -> None:
    env = _placed("world", [(0, 0), (5, 5)], [(0, 1), (0, 6)], max_steps=2, step_cost=0.1,
                  goal_reward=2.0)
    _, rewards, terminations, truncations, _ = env.step({"agent_0": UP, "agent_1": UP})
    assert rewards == {"agent_0": 2.0, "agent_1": -0.1}
    assert terminations == {"agent_0": True, "agent_1": False}
    assert not any(truncations.values())
    assert env.agents == ["agent_1"]
    observations, rewards, terminations, truncations, _ = env.step({"agent_1": LEFT})
    assert rewards == {"agent_1": -0.1}
    assert terminations == {"agent_1": False} and truncations == {"agent_1": True}
    assert env.agents == [] and list(observations) == ["agent_1"]


def test_agent_that_left_no_longer_blocks_or_shows() -> None:
    env = _placed("world", [(0, 0), (1, 1)], [(0, 1), (6, 6)])
    env.step({"agent_0": UP, "agent_1": UP})  # agent_0 reaches its goal and leaves
    assert env.agents == ["agent_1"]
    observations, *_ = env.step({"agent_1": LEFT})  # into the cell agent_0 left
    assert env.position[1].tolist() == [0, 2]
    assert _window(observations["agent_1"], 2)[1].sum() == 0


def test_reset_places_agents_and_goals_on_distinct_cells_and_is_seeded() -> None:
    env = GridNavEnv(num_agents=4, size=3, frame="agent")
    first, _ = env.reset(seed=5)
    cells = {tuple(cell) for cell in np.concatenate([env.position, env.goal])}
    assert len(cells) == 8
    again, _ = GridNavEnv(num_agents=4, size=3, frame="agent").reset(seed=5)
    for agent in first:
        np.testing.assert_array_equal(first[agent], again[agent])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"frame": "ego"}, "frame must be one of"), ({"size": 1}, "size >= 2"),
     ({"num_agents": 5, "size": 3}, "need 10 distinct cells")],
)
def test_bad_arguments_are_refused(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        GridNavEnv(**kwargs)  # type: ignore[arg-type]
