"""Recurrent PPO (groups.rnn=gru): rollout states, sequence replay, episode boundaries."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from marl.algos.ppo import PPO
from marl.algos.rollout import from_sequences, take, to_sequences
from marl.build import build_env, make_learner
from marl.config import load
from marl.groups import AgentGroup, Recurrence
from marl.logging import EpisodeTracker
from marl.play import play_episodes

CPU = torch.device("cpu")
FORMS = [("shared", "batched"), ("independent", "batched"), ("independent", "fork"),
         ("independent", "loop")]


def _learner(overrides: dict[str, Any], seed: int = 0) -> PPO:
    base = {"env.task": "toy/memory", "env.num_envs": 3, "algo.num_steps": 12,
            "groups.rnn": "gru", "groups.hidden": [16], "groups.rnn_hidden": 8,
            "train.eval_every": 0}
    config = load(None, {**base, **overrides})
    torch.manual_seed(seed)
    env = build_env(config, CPU)
    learner = make_learner(env, config, CPU)
    assert isinstance(learner, PPO)
    return learner


def _tracker(learner: PPO) -> EpisodeTracker:
    env = learner.env
    return EpisodeTracker({n: s.num_agents for n, s in env.groups.items()}, env.num_envs, CPU)


def _group(learner: PPO, name: str) -> AgentGroup:
    group = learner.groups[name]
    assert isinstance(group, AgentGroup)
    return group


def test_sequence_layout_round_trips_and_keeps_time_order() -> None:
    x = torch.arange(6 * 2).reshape(6, 2)  # [T=6, E=2]
    seqs = to_sequences(x, 3)  # [L=3, C*E=4]
    assert seqs.shape == (3, 4)
    # Sequence c*E + e is chunk c of copy e, in time order.
    assert seqs[:, 0].tolist() == [0, 2, 4] and seqs[:, 3].tolist() == [7, 9, 11]
    assert torch.equal(from_sequences(seqs, 2), x)


@pytest.mark.parametrize(("algo", "seq_len"), [("ippo", None), ("ippo", 4), ("mappo", 6)])
@pytest.mark.parametrize(("sharing", "backend"), FORMS)
def test_replayed_log_probs_equal_the_rollouts(algo: str, seq_len: int | None, sharing: str,
                                               backend: str) -> None:
    """Before any gradient step each minibatch of sequences, replayed from its stored
    start states, gives the rollout's log-probs and values: ratio exactly 1. Episodes of
    toy/memory (5 steps) start inside every chunk, and the state is carried in from the
    previous rollout."""
    learner = _learner({"algo.name": algo, "algo.seq_len": seq_len, "groups.sharing": sharing,
                        "groups.backend": backend, "algo.num_minibatches": 3})
    tracker = _tracker(learner)
    learner.collect(tracker)
    learner.collect(tracker)  # the second rollout starts from carried, non-zero states
    sequences = learner.sequences["agent"]
    assert sequences is not None and sequences.actor_start is not None
    assert float(sequences.actor_start[0].abs().max()) > 0.0
    batch = learner._flat_batches()["agent"]
    group = _group(learner, "agent")
    order = torch.randperm(batch.obs.shape[1])
    with torch.no_grad():
        for index in order.chunk(3):
            mini = take(batch, index)
            assert mini.sequences is not None and mini.sequences.actor_hidden is not None
            recurrence = Recurrence(mini.sequences.actor_hidden, mini.sequences.first,
                                    mini.alive)
            log_prob = group.distribution(mini.obs, mini.action_mask, recurrence).log_prob(
                mini.action)
            ratio = (log_prob - mini.log_prob).exp()
            assert float((ratio - 1).abs().max()) <= 1e-6
            critic = mini.sequences.critic_hidden
            if algo == "ippo":
                assert critic is not None
                prediction = group.prediction(mini.critic_input,
                                              Recurrence(critic, mini.sequences.first, mini.alive))
                torch.testing.assert_close(prediction, mini.old_prediction, rtol=0, atol=1e-5)
            else:
                assert critic is None  # MAPPO's state critic is feed-forward


def test_replay_from_zero_states_would_differ() -> None:
    """The stored start states matter: the check above is not vacuous."""
    learner = _learner({"algo.seq_len": 4})
    tracker = _tracker(learner)
    learner.collect(tracker)
    learner.collect(tracker)
    batch = learner._flat_batches()["agent"]
    assert batch.sequences is not None and batch.sequences.actor_hidden is not None
    group = _group(learner, "agent")
    zero = Recurrence(torch.zeros_like(batch.sequences.actor_hidden), batch.sequences.first,
                      batch.alive)
    with torch.no_grad():
        log_prob = group.distribution(batch.obs, None, zero).log_prob(batch.action)
    assert float((log_prob - batch.log_prob).abs().max()) > 1e-4


def test_an_episode_does_not_see_the_one_before() -> None:
    """Changing an observation in episode k of a copy changes outputs later in episode k
    and nothing in episode k+1 of that copy, nor in any other copy."""
    learner = _learner({"algo.num_steps": 15, "env.num_envs": 2})
    learner.collect(_tracker(learner))
    store, sequences = learner.storage["agent"], learner.sequences["agent"]
    assert sequences is not None and sequences.actor_start is not None
    group = _group(learner, "agent")

    def logits(obs: torch.Tensor) -> torch.Tensor:
        recurrence = Recurrence(sequences.actor_start[0], sequences.first, store.alive)
        with torch.no_grad():
            return group.distribution(obs, None, recurrence).log_probs  # type: ignore[union-attr]

    starts = sequences.first[:, 0, 0].nonzero().flatten().tolist()
    assert len(starts) >= 3, starts  # 5-step episodes in a 15-step rollout
    k, k_next, k_after = starts[0], starts[1], starts[2]
    obs = store.obs.clone()
    obs[k, 0] += 3.0  # the cue step of episode k in copy 0
    before, after = logits(store.obs), logits(obs)
    changed = (before - after).abs().amax(dim=(-1, -2))  # [T, E]
    assert float(changed[k + 1:k_next, 0].max()) > 1e-4  # later in episode k: remembered
    assert float(changed[k_next:k_after, 0].max()) == 0.0  # episode k + 1: forgotten
    assert float(changed[:, 1].max()) == 0.0


def test_late_entries_start_fresh_and_dead_agents_hold_their_state() -> None:
    """toy/leave_early: agents leave one by one and late_0 enters at step 2. An agent's
    first step (at a reset, an auto-reset or a late entry) is marked ``first``; while an
    agent is not alive its state does not move."""
    learner = _learner({"env.task": "toy/leave_early", "env.kwargs.num_agents": 3,
                        "env.kwargs.late_agent": True, "algo.num_steps": 8,
                        "env.num_envs": 2})
    states: dict[str, list[torch.Tensor]] = {"agent": [], "late": []}
    original = learner.memory.set_state

    def record(group: str, net: str, value: torch.Tensor) -> None:
        if net == "actor":
            states[group].append(value)
        original(group, net, value)

    learner.memory.set_state = record  # type: ignore[method-assign]
    learner.collect(_tracker(learner))
    for name in ("agent", "late"):
        store, sequences = learner.storage[name], learner.sequences[name]
        assert sequences is not None
        alive, ended = store.alive, store.terminated | store.truncated
        expected = alive.clone()
        expected[1:] &= ~alive[:-1] | ended[:-1]
        assert torch.equal(sequences.first, expected), name
        trail = torch.stack(states[name])  # [T, E, A, H], the state after each step
        for t in range(1, trail.shape[0]):
            dead = ~alive[t]
            assert torch.equal(trail[t][dead], trail[t - 1][dead]), (name, t)
    late = learner.sequences["late"]
    assert late is not None and bool(late.first[2:].any())  # late_0's entry mid-episode


def test_same_seed_gives_the_same_recurrent_training() -> None:
    runs = []
    for _ in range(2):
        learner = _learner({"algo.seq_len": 6}, seed=5)
        tracker = _tracker(learner)
        metrics = []
        for i in range(2):
            learner.collect(tracker)
            metrics.append(learner.update(i / 2))
        runs.append(metrics)
    assert runs[0] == runs[1]


def _train_memory(rnn: str, steps: int, sharing: str = "shared", seed: int = 0) -> float:
    """Train IPPO on toy/memory (4 cues, delay 3: chance 0.25, optimum 1.0); return the
    mean greedy evaluation return."""
    learner = _learner({"groups.rnn": rnn, "env.num_envs": 16, "algo.num_steps": 20,
                        "optim.lr": 3e-3, "groups.hidden": [32], "groups.rnn_hidden": 32,
                        "groups.sharing": sharing, "train.total_env_steps": steps}, seed=seed)
    tracker = _tracker(learner)
    done = 0
    while done < steps:
        done += learner.collect(tracker)
        learner.update(done / steps)
    result = play_episodes(learner, build_env(learner.config, CPU), 64, seed=123)
    return sum(result.returns) / len(result.returns)


def test_gru_remembers_the_cue_and_the_mlp_cannot() -> None:
    gru = _train_memory("gru", 12_000)
    mlp = _train_memory("none", 12_000)
    assert gru >= 0.9, gru
    assert mlp <= 0.45, mlp


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("sharing", ["shared", "independent"])
def test_gru_reaches_the_optimum_over_seeds(sharing: str, seed: int) -> None:
    assert _train_memory("gru", 30_000, sharing, seed) >= 0.9


def test_train_resume_and_marl_eval_of_a_recurrent_run(tmp_path: Any) -> None:
    """A GRU run checkpoints, resumes from its checkpoint (new episodes, zeroed states) to
    the full budget, and ``marl eval`` plays it with the hidden state carried: on
    toy/memory only a policy that remembers can score above chance (0.25)."""
    from marl.evaluate import evaluate
    from marl.trainer import train

    run_dir = tmp_path / "run"
    overrides = {"env.task": "toy/memory", "env.num_envs": 16, "algo.num_steps": 20,
                 "optim.lr": 3e-3, "groups.rnn": "gru", "groups.hidden": [32],
                 "groups.rnn_hidden": 32, "train.total_env_steps": 6_400,
                 "train.checkpoint_every": 3_200, "train.eval_every": 0,
                 "train.progress": False, "run.tensorboard": False, "run.dir": str(run_dir)}
    train(load(None, overrides))
    resumed = train(load(None, {**overrides, "train.total_env_steps": 12_800,
                                "run.resume": True}))
    assert resumed.env_steps >= 12_800
    result = evaluate(run_dir, episodes=64, greedy=True)
    assert result["env_steps"] >= 12_800
    assert result["episode_return_mean"] >= 0.9, result


@pytest.mark.parametrize("backend", ["batched", "fork", "loop"])
def test_per_group_sharing_overrides_replay_exactly(backend: str) -> None:
    """Two groups, one shared and one independent (``groups.overrides``), on a task where
    agents leave and one enters late: each group replays its own rollout exactly."""
    learner = _learner({"env.task": "toy/leave_early", "env.kwargs.num_agents": 3,
                        "env.kwargs.late_agent": True, "algo.num_steps": 8,
                        "algo.seq_len": 4, "groups.overrides": {"late": "independent"},
                        "groups.backend": backend, "env.num_envs": 2})
    tracker = _tracker(learner)
    learner.collect(tracker)
    learner.collect(tracker)
    batches = learner._flat_batches()
    assert set(batches) == {"agent", "late"}
    for name, batch in batches.items():
        group = _group(learner, name)
        assert batch.sequences is not None and batch.sequences.actor_hidden is not None
        recurrence = Recurrence(batch.sequences.actor_hidden, batch.sequences.first, batch.alive)
        with torch.no_grad():
            log_prob = group.distribution(batch.obs, batch.action_mask, recurrence).log_prob(
                batch.action)
        alive = batch.alive
        assert float((log_prob - batch.log_prob)[alive].abs().max()) <= 1e-6, name
    metrics = learner.update(0.0)
    assert {"agent/loss", "late/loss"} <= set(metrics)
    assert all(torch.isfinite(torch.tensor(v)) for v in metrics.values())
