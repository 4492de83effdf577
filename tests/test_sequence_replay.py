"""Sequence replay: chunks aligned to episodes, warm-up, padding, n-step windows, resume."""

import pytest
import torch

from marl.replay import GroupTransition
from marl.sequence_replay import SequenceReplayBuffer

CPU = torch.device("cpu")
GAMMA = 0.5


def _buffer(capacity: int, num_envs: int) -> SequenceReplayBuffer:
    """One group ``agent`` of one agent; obs ``[global step, episode step]``."""
    return SequenceReplayBuffer(capacity, num_envs, {"agent": (1, 2, (), torch.int64)}, None,
                                CPU)


def _play(buffer: SequenceReplayBuffer, lengths: list[int], steps: int,
          truncate: bool = False, start: int = 0) -> None:
    """Steps ``t = start .. start + steps - 1`` of copies whose episodes last ``lengths[e]``
    steps, each copy starting an episode at ``start``: obs ``[t, step within the episode]``,
    reward ``t + 1``, final_obs ``[t + 0.5, ...]``; episodes end by termination (by
    truncation with ``truncate``)."""
    episode_step = torch.zeros(len(lengths), dtype=torch.long)
    limit = torch.tensor(lengths)
    for t in range(start, start + steps):
        done = episode_step == limit - 1
        obs = torch.stack([torch.full_like(episode_step, t), episode_step], -1).float()
        flag = done.unsqueeze(-1)
        transition = GroupTransition(
            obs=obs.unsqueeze(1), action=torch.zeros(len(lengths), 1, dtype=torch.long),
            reward=torch.full((len(lengths), 1), t + 1.0),
            terminated=flag & (not truncate), truncated=flag & truncate,
            alive=torch.ones(len(lengths), 1, dtype=torch.bool),
            final_obs=(obs + torch.tensor([0.5, 0.0])).unsqueeze(1))
        buffer.add({"agent": transition}, done, first={"agent": (episode_step == 0)[:, None]})
        episode_step = torch.where(done, 0, episode_step + 1)


def test_sequences_start_at_aligned_chunks_and_stop_at_episode_ends_and_the_newest_step(
) -> None:
    capacity, lengths, steps, seq_len, burn_in = 12, [5, 7], 30, 3, 2
    buffer = _buffer(capacity, len(lengths))
    _play(buffer, lengths, steps)  # wraps: steps 18..29 are stored
    oldest, newest = steps - capacity, steps - 1
    expected = {(t, e) for e in range(2) for t in range(oldest, steps)
                if (es := t % lengths[e]) % seq_len == 0 and t - min(burn_in, es) >= oldest}
    sample = buffer.sample_sequences(400, seq_len, burn_in, 2, GAMMA,
                                     torch.Generator().manual_seed(0))
    group = sample.groups["agent"]
    obs = group.obs[..., 0, :]  # [W, B, 2]
    start_t, start_es = obs[burn_in, :, 0].long(), obs[burn_in, :, 1].long()
    copy = torch.tensor([next(e for e in range(2) if (t, e) in expected
                              and t % lengths[e] == es) for t, es in
                         zip(start_t.tolist(), start_es.tolist(), strict=True)])
    assert {(t, e) for t, e in zip(start_t.tolist(), copy.tolist(), strict=True)} == expected
    length = torch.tensor(lengths)[copy]
    for k in range(seq_len):
        in_episode = start_es + k < length
        stored = start_t + k <= newest
        assert torch.equal(sample.valid[k], in_episode & stored)
        assert torch.equal(group.alive[k, :, 0], in_episode & stored)
        assert torch.equal(obs[burn_in + k, sample.valid[k], 0],
                           (start_t + k)[sample.valid[k]].float())
    # The warm-up reads the start's own episode, never older or overwritten steps.
    for j in range(burn_in):
        back = burn_in - j
        used = group.window_alive[j, :, 0]
        assert torch.equal(used, start_es >= back)
        assert torch.equal(obs[j, used, 1].long(), (start_es - back)[used])
        assert bool((obs[j, used, 0] >= oldest).all())


def test_n_step_targets_of_a_three_episode_sequence_match_a_hand_calculation() -> None:
    """Steps 0..2 end in a termination, 3..5 in a truncation, 6..7 are still running
    (step 7 is the newest); rewards t + 1, n = 2."""
    buffer = _buffer(10, 1)
    _play(buffer, [3], 3)
    _play(buffer, [3], 3, truncate=True, start=3)
    _play(buffer, [100], 2, start=6)
    sample = buffer.sample_sequences(32, 4, 1, 2, GAMMA, torch.Generator().manual_seed(0))
    group = sample.groups["agent"]
    starts = group.obs[1, :, 0, 0]  # after one warm-up step
    assert set(starts.tolist()) == {0.0, 3.0, 6.0}
    g = GAMMA
    hand = {  # per sequence step: (reward, discount, bootstrap step) or None (padding)
        0.0: [(1 + g * 2, g**2, 1), (2 + g * 3, 0.0, 2), (3.0, 0.0, 2), None],
        3.0: [(4 + g * 5, g**2, 1), (5 + g * 6, g**2, 2), (6.0, g, 2), None],
        6.0: [(7 + g * 8, g**2, 1), (8.0, g, 1), None, None],  # cut at the newest step
    }
    for start, rows in hand.items():
        b = int((starts == start).nonzero()[0])
        # A sequence at an episode's start has no warm-up: its window step before is dead.
        assert not bool(group.window_alive[0, b].any()) and bool(group.first[1, b].all())
        for k, row in enumerate(rows):
            assert bool(sample.valid[k, b]) == (row is not None)
            if row is None:
                continue
            reward, discount, index = row
            for r, d, i, next_obs in (
                    (sample.team_reward[k, b], sample.team_discount[k, b],
                     sample.team_index[k, b], group.team_next_obs[k, b, 0, 0]),
                    (group.reward[k, b, 0], group.discount[k, b, 0],
                     group.next_index[k, b, 0], group.next_obs[k, b, 0, 0])):
                assert float(r) == pytest.approx(reward)
                assert float(d) == pytest.approx(discount)
                assert int(i) == index
                assert float(next_obs) == start + index + 0.5  # that step's final obs


def test_a_restored_buffer_starts_new_episodes() -> None:
    buffer = _buffer(10, 1)
    _play(buffer, [100], 5)  # one long episode, still running
    restored = _buffer(10, 1)
    _play(restored, [100], 3)  # whatever it held before is replaced
    restored.load_state_dict(buffer.state_dict())
    assert torch.equal(restored.episode_step, buffer.episode_step)
    _play(restored, [100], 3, start=5)  # a new episode after the resume
    assert restored.episode_step[5:8, 0].tolist() == [0, 1, 2]
    sample = restored.sample_sequences(64, 8, 0, 1, GAMMA, torch.Generator().manual_seed(0))
    starts = sample.groups["agent"].obs[0, :, 0, 0].tolist()
    lengths = sample.valid.sum(0).tolist()
    # Each sequence stops where its episode stopped: none reads across the resume.
    assert dict(zip(starts, lengths, strict=True)) == {0.0: 5, 5.0: 3}
