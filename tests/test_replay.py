"""The replay buffer: preallocation, wrap-around, sampling, n-step windows at episode ends."""

import pytest
import torch

from marl.replay import GroupTransition, ReplayBuffer

GAMMA = 0.5


def _buffer(capacity: int, num_envs: int = 1, agents: int = 2,
            state: bool = False) -> ReplayBuffer:
    layout = {"agent": (agents, 1, (), torch.int64)}
    return ReplayBuffer(capacity, num_envs, layout, 1 if state else None, torch.device("cpu"))


def _add(buffer: ReplayBuffer, step: int, terminated: bool = False, truncated: bool = False,
         agents: int = 2) -> None:
    """One step of every copy: reward = step, obs = step, final_obs = step + 0.5."""
    envs = buffer.num_envs
    shape = (envs, agents)
    flag = torch.zeros(shape, dtype=torch.bool)
    transition = GroupTransition(
        obs=torch.full((*shape, 1), float(step)), action=torch.full(shape, step % 3),
        reward=torch.full(shape, float(step)), terminated=flag | terminated,
        truncated=flag | truncated, alive=~flag, final_obs=torch.full((*shape, 1), step + 0.5))
    done = torch.full((envs,), terminated or truncated)
    state = torch.full((envs, 1), float(step))
    buffer.add({"agent": transition}, done, state if buffer.state is not None else None,
               state + 0.5 if buffer.state is not None else None)


def test_storage_is_preallocated_with_agent_axis() -> None:
    buffer = _buffer(capacity=5, num_envs=3)
    store = buffer.storage["agent"]
    assert store.obs.shape == (5, 3, 2, 1) and store.action.dtype == torch.int64
    assert store.terminated.dtype == torch.bool and store.truncated.dtype == torch.bool
    pointer = store.obs.data_ptr()
    for step in range(12):
        _add(buffer, step)
    assert buffer.storage["agent"].obs.data_ptr() == pointer


def test_wrap_around_overwrites_the_oldest() -> None:
    buffer = _buffer(capacity=3)
    for step in range(5):
        _add(buffer, step)
    assert buffer.size == 3 and buffer.pos == 2 and buffer.num_transitions == 3
    # Slots hold steps 3, 4, 2: steps 0 and 1 were overwritten.
    assert buffer.storage["agent"].obs[:, 0, 0, 0].tolist() == [3.0, 4.0, 2.0]


def test_sampling_covers_stored_transitions_only() -> None:
    buffer = _buffer(capacity=10, num_envs=2)
    with pytest.raises(ValueError, match="empty"):
        buffer.sample(4, 1, GAMMA)
    for step in range(4):
        _add(buffer, step)
    sample = buffer.sample(2000, 1, GAMMA, generator=torch.Generator().manual_seed(0))
    seen = sample.groups["agent"].obs[:, 0, 0]
    assert set(seen.tolist()) == {0.0, 1.0, 2.0, 3.0}
    counts = torch.bincount(seen.long())
    assert counts.min() > 400  # roughly uniform over the four stored steps


def test_one_step_sample_pairs_obs_with_its_final_obs_and_reward() -> None:
    buffer = _buffer(capacity=4)
    for step in range(7):  # wraps
        _add(buffer, step)
    sample = buffer.sample(200, 1, GAMMA, generator=torch.Generator().manual_seed(1))
    group = sample.groups["agent"]
    step = group.obs[:, 0, 0]
    torch.testing.assert_close(group.reward[:, 0], step)
    torch.testing.assert_close(group.next_obs[:, 0, 0], step + 0.5)
    torch.testing.assert_close(group.discount, torch.full_like(group.discount, GAMMA))
    torch.testing.assert_close(group.action, step.long().unsqueeze(-1).expand(-1, 2) % 3)


def _sample_step(buffer: ReplayBuffer, n: int, step: float) -> dict[str, float]:
    sample = buffer.sample(500, n, GAMMA, generator=torch.Generator().manual_seed(2))
    group = sample.groups["agent"]
    rows = (group.obs[:, 0, 0] == step).nonzero()
    assert rows.numel() > 0, f"step {step} was never drawn"
    row = int(rows[0])
    return {"reward": float(group.reward[row, 0]), "discount": float(group.discount[row, 0]),
            "next_obs": float(group.next_obs[row, 0, 0]),
            "team_reward": float(sample.team_reward[row]),
            "team_discount": float(sample.team_discount[row]),
            "next_alive": float(group.next_alive[row, 0])}


def test_n_step_window_stops_at_a_termination() -> None:
    buffer = _buffer(capacity=8)
    for step, terminated in [(1, False), (2, True), (3, False), (4, False), (5, False)]:
        _add(buffer, step, terminated=terminated)
    got = _sample_step(buffer, 3, 1.0)  # window 1, 2(terminated): no bootstrap, 3 not read
    assert got["reward"] == 1 + GAMMA * 2 and got["discount"] == 0.0
    assert got["team_reward"] == 1 + GAMMA * 2 and got["team_discount"] == 0.0
    assert got["next_alive"] == 0.0
    got = _sample_step(buffer, 3, 3.0)  # a full window inside the next episode
    assert got["reward"] == 3 + GAMMA * 4 + GAMMA**2 * 5 and got["discount"] == GAMMA**3
    assert got["next_obs"] == 5.5


def test_n_step_window_bootstraps_at_a_truncation_from_its_final_obs() -> None:
    buffer = _buffer(capacity=8)
    for step, truncated in [(1, False), (2, True), (3, False)]:
        _add(buffer, step, truncated=truncated)
    got = _sample_step(buffer, 3, 1.0)
    assert got["reward"] == 1 + GAMMA * 2 and got["discount"] == GAMMA**2
    assert got["next_obs"] == 2.5  # the cut state, not the first obs of the next episode
    assert got["team_discount"] == GAMMA**2 and got["next_alive"] == 1.0


def test_n_step_window_never_reads_past_the_newest_step() -> None:
    buffer = _buffer(capacity=4)
    for step in range(6):  # slots hold 4, 5, 2, 3; the newest is 5
        _add(buffer, step)
    got = _sample_step(buffer, 3, 5.0)
    assert got["reward"] == 5.0 and got["discount"] == GAMMA and got["next_obs"] == 5.5
    got = _sample_step(buffer, 3, 3.0)  # 3, then 4 and 5 across the ring's end
    assert got["reward"] == 3 + GAMMA * 4 + GAMMA**2 * 5 and got["next_obs"] == 5.5


def test_state_is_stored_and_the_next_state_taken_at_the_window_end() -> None:
    buffer = _buffer(capacity=6, state=True)
    for step in range(4):
        _add(buffer, step)
    sample = buffer.sample(100, 2, GAMMA, generator=torch.Generator().manual_seed(3))
    assert sample.state is not None and sample.next_state is not None
    step = sample.groups["agent"].obs[:, 0, 0]
    torch.testing.assert_close(sample.state[:, 0], step)
    torch.testing.assert_close(sample.next_state[:, 0], torch.clamp(step + 1, max=3) + 0.5)


def test_too_small_capacity_is_refused() -> None:
    with pytest.raises(ValueError, match="buffer_size"):
        _buffer(capacity=1)


def test_team_return_runs_to_the_episode_end_and_is_cut_at_the_horizon() -> None:
    """The observed return RES's penalty compares Q_tot to: rewards of the team from the
    sampled step to its episode's end (a termination or a truncation), never past the
    newest stored step, at most ``return_horizon`` steps."""
    buffer = _buffer(capacity=10)
    episodes = [(1, False, False), (2, False, False), (3, False, True),  # cut at 3
                (4, False, False), (5, True, False),  # ends at 5
                (6, False, False), (7, False, False)]  # running: 7 is the newest
    for step, terminated, truncated in episodes:
        _add(buffer, step, terminated=terminated, truncated=truncated)

    def returns(horizon: int) -> dict[float, float]:
        sample = buffer.sample(400, 1, GAMMA, generator=torch.Generator().manual_seed(4),
                               return_horizon=horizon)
        assert sample.team_return is not None
        steps = sample.groups["agent"].obs[:, 0, 0]
        return {float(s): float(g) for s, g in zip(steps, sample.team_return, strict=True)}

    got = returns(horizon=50)
    assert set(got) == {1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0}
    assert got[1.0] == 1 + GAMMA * 2 + GAMMA**2 * 3
    assert got[3.0] == 3.0 and got[4.0] == 4 + GAMMA * 5 and got[5.0] == 5.0
    assert got[6.0] == 6 + GAMMA * 7 and got[7.0] == 7.0
    cut = returns(horizon=2)
    assert cut[1.0] == 1 + GAMMA * 2 and cut[4.0] == got[4.0]
    assert buffer.sample(8, 1, GAMMA).team_return is None
