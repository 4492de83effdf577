"""Recurrent IQL, VDN and QMIX: sequence replay, burn-in, hidden states, learning a memory."""

import io
import json
from pathlib import Path

import pytest
import torch
from marl_envs.core import BatchedReset

from marl import checkpoint
from marl.algos.q_learning import QLearning
from marl.build import build_env, make_learner
from marl.cli import main
from marl.config import ConfigError, load
from marl.evaluate import evaluate
from marl.logging import EpisodeTracker
from marl.nets.recurrent import RecurrentGroupNet
from marl.trainer import train

CPU = torch.device("cpu")


pytestmark = pytest.mark.usefixtures("one_thread")


# ------------------------------------------------------------------ learners
def _learner(algo: str = "vdn", task: str = "toy/memory", **overrides: str) -> QLearning:
    config = load(overrides={
        "algo.name": algo, "env.task": task, "env.num_envs": "4", "algo.num_steps": "4",
        "algo.warmup_steps": "16", "algo.batch_size": "16", "groups.hidden": "[8]",
        "groups.rnn": "gru", "groups.rnn_hidden": "8", "algo.buffer_size": "256",
        "algo.seq_len": "4", "algo.burn_in": "2", "algo.n_step": "2", **overrides})
    learner = make_learner(build_env(config, CPU), config, CPU)
    assert isinstance(learner, QLearning)
    return learner


def _collect(learner: QLearning, calls: int) -> None:
    tracker = EpisodeTracker(learner.num_agents, learner.env.num_envs, CPU)
    for _ in range(calls):
        learner.collect(tracker)


def _net(learner: QLearning, name: str) -> RecurrentGroupNet:
    net = learner.q[name]
    assert isinstance(net, RecurrentGroupNet)
    return net


@pytest.mark.parametrize("algo", ["iql", "vdn", "qmix"])
def test_burn_in_before_an_episode_start_changes_nothing(algo: str) -> None:
    """toy/memory episodes (5 steps) are shorter than a sequence, so every sequence starts
    an episode: a window with 3 warm-up steps (all from the episode before) gives the loss
    of one with none."""
    learner = _learner(algo, **{"algo.seq_len": "8"})
    _collect(learner, 6)
    assert learner.sequences is not None
    losses = []
    for burn_in in (0, 3):
        sample = learner.sequences.sample_sequences(
            8, 8, burn_in, 2, 0.9, torch.Generator().manual_seed(1))
        assert bool(sample.groups["agent"].first[burn_in].all())  # episode starts
        losses.append(learner.sequence_losses(sample)["loss"])
    assert losses[0] > 0
    torch.testing.assert_close(losses[0], losses[1], rtol=1e-6, atol=0)


@pytest.mark.parametrize("algo", ["iql", "vdn", "qmix"])
def test_padding_after_an_episode_end_is_not_learned_from(algo: str) -> None:
    """Sequences of 8 steps over 5-step episodes end in 3 padding steps: whatever their
    rewards, the loss stays the same."""
    learner = _learner(algo, **{"algo.seq_len": "8"})
    _collect(learner, 6)
    assert learner.sequences is not None
    sample = learner.sequences.sample_sequences(8, 8, 2, 2, 0.9,
                                                torch.Generator().manual_seed(0))
    group = sample.groups["agent"]
    assert bool(sample.valid[:5].any()) and not bool(sample.valid[5:].any())
    padded = sample._replace(
        team_reward=torch.where(sample.valid, sample.team_reward, 100.0),
        groups={"agent": group._replace(
            reward=torch.where(group.alive, group.reward, 100.0))})
    torch.testing.assert_close(learner.sequence_losses(padded)["loss"],
                               learner.sequence_losses(sample)["loss"], rtol=1e-6, atol=0)


def test_burn_in_warms_the_state_up_without_gradients() -> None:
    """toy/memory with 8-step episodes, sequences of 4 steps after 4 warm-up steps: the
    second sequence of every episode is warmed up on the first half."""
    learner = _learner(**{"env.kwargs.delay": "6", "algo.burn_in": "4"})
    _collect(learner, 6)
    assert learner.sequences is not None
    sample = learner.sequences.sample_sequences(16, 4, 4, 2, 0.9,
                                                torch.Generator().manual_seed(0))
    group = sample.groups["agent"]
    warmed = group.window_alive[:4].any(0).any(-1)  # [B] sequences with a warm-up
    assert 0 < int(warmed.sum()) < 16
    obs = group.obs.clone().requires_grad_()
    loss = learner.sequence_losses(sample._replace(groups={"agent": group._replace(obs=obs)}))
    (grad,) = torch.autograd.grad(loss["loss"], obs)
    assert bool((grad[:4] == 0).all())  # no gradient into the warm-up steps
    assert bool((grad[4:8] != 0).any())
    # ...but they set the state the sequence starts from: other warm-up obs, other loss.
    shifted = group.obs.clone()
    shifted[:4] += 1.0
    moved = learner.sequence_losses(
        sample._replace(groups={"agent": group._replace(obs=shifted)}))["loss"]
    assert not torch.isclose(moved, loss["loss"].detach())


def test_iql_loss_is_the_td_error_of_a_step_by_step_replay() -> None:
    """The loss of sampled sequences (warm-up included) equals TD errors computed by
    stepping both networks through each window from zero, one step at a time."""
    learner = _learner("iql", **{"env.kwargs.delay": "6", "algo.burn_in": "4",
                                 "algo.double_q": "false"})
    _collect(learner, 6)
    assert learner.sequences is not None
    online, target = _net(learner, "agent"), learner.target_q["agent"]
    assert isinstance(target, RecurrentGroupNet)
    with torch.no_grad():  # a target unlike the online network
        for parameter in target.parameters():
            parameter.add_(0.3 * torch.randn_like(parameter))
    sample = learner.sequences.sample_sequences(16, 4, 4, 2, 0.9,
                                                torch.Generator().manual_seed(0))
    group = sample.groups["agent"]
    obs = learner.normalize_obs("agent", group.obs)
    with torch.no_grad():
        online_state = target_state = online.initial_hidden(16)
        q, states = [], []
        for t in range(obs.shape[0]):
            step_q, online_state = online.step(obs[t], online_state, group.first[t],
                                               group.window_alive[t])
            _, target_state = target.step(obs[t], target_state, group.first[t],
                                          group.window_alive[t])
            q.append(step_q)
            states.append(target_state)
        taken = torch.stack(q)[4:8].gather(-1, group.action.unsqueeze(-1)).squeeze(-1)
        after = torch.stack(states)[4:]  # [P, B, A, H]
        state = after.gather(0, group.next_index.unsqueeze(-1).expand(-1, -1, -1, 8))
        next_q = target.from_states(learner.normalize_obs("agent", group.next_obs), state)
        td = taken - (group.reward + group.discount * next_q.max(-1).values)
    assert bool(group.alive.any()) and bool(group.window_alive[:4].any())
    loss = learner.sequence_losses(sample)["loss"]
    torch.testing.assert_close(loss, (td**2)[group.alive].mean())


def test_collect_resets_freezes_and_carries_every_agents_hidden_state() -> None:
    """toy/leave_early: agents leave one by one, one enters late, episodes of 3 steps.
    Collected one step per call, each step's new state is one network step from the
    state before (carried over from the previous call), from zero at an agent's episode
    start, and unchanged where the agent is not alive."""
    learner = _learner(task="toy/leave_early", **{
        "env.kwargs.late_agent": "true", "env.num_envs": "2", "algo.num_steps": "1",
        "algo.obs_norm": "false"})
    assert learner.sequences is not None
    seen = {"reset after moving": 0, "frozen after moving": 0, "carried": 0}
    for _ in range(8):
        before = {name: learner.memory.state(name, "q").clone() for name in learner.specs}
        _collect(learner, 1)
        slot = (learner.replay.pos - 1) % learner.replay.capacity
        for name in learner.specs:
            store, net = learner.replay.storage[name], _net(learner, name)
            obs, alive = store.obs[slot], store.alive[slot]
            first = learner.sequences.first[name][slot]
            after = learner.memory.state(name, "q")
            no_reset = torch.zeros_like(first)
            _, from_before = net.step(obs, before[name], no_reset, alive)
            _, from_zero = net.step(obs, torch.zeros_like(before[name]), no_reset, alive)
            moved = before[name].abs().sum(-1) > 0
            torch.testing.assert_close(after[~alive], before[name][~alive], rtol=0, atol=0)
            torch.testing.assert_close(after[first], from_zero[first])
            carried = alive & ~first
            torch.testing.assert_close(after[carried], from_before[carried])
            seen["reset after moving"] += int((first & moved).sum())
            seen["frozen after moving"] += int((~alive & moved).sum())
            seen["carried"] += int((carried & moved).sum())
    assert all(count > 0 for count in seen.values()), seen


def test_reset_env_restarts_hidden_states_and_episodes() -> None:
    """12-step episodes cut after 8 steps by a reset (as a resume does)."""
    learner = _learner(**{"env.kwargs.delay": "10", "algo.seq_len": "16"})
    assert learner.sequences is not None
    _collect(learner, 2)
    assert learner.memory.state("agent", "q").any()
    learner.reset_env(seed=5)
    assert not learner.memory.state("agent", "q").any()
    _collect(learner, 1)
    assert learner.sequences.episode_step[8:12, 0].tolist() == [0, 1, 2, 3]
    assert bool(learner.sequences.first["agent"][8].all())
    sample = learner.sequences.sample_sequences(32, 16, 2, 1, 0.9,
                                                torch.Generator().manual_seed(0))
    assert set(sample.valid.sum(0).tolist()) == {8, 4}


def test_evaluation_carries_its_own_hidden_state_through_each_episode() -> None:
    learner = _learner()
    _collect(learner, 2)
    training = learner.memory.state("agent", "q").clone()
    assert training.abs().sum() > 0
    env, net = build_env(learner.config, CPU), _net(learner, "agent")
    memory = learner.new_memory(env.num_envs)
    assert memory.state("agent", "q").shape == (4, 2, 8)
    assert not memory.state("agent", "q").any()
    current = env.reset(seed=3)
    for t in range(10):  # two 5-step episodes
        before = memory.state("agent", "q").clone()
        if t % 5 == 0:
            before.zero_()
        obs = learner.normalize_obs("agent", current.groups["agent"].obs.float())
        alive = current.groups["agent"].alive
        q, expected = net.step(obs, before, torch.zeros_like(alive), alive)
        actions = learner.eval_actions(current, False, memory)
        torch.testing.assert_close(memory.state("agent", "q"), expected)
        assert torch.equal(actions["agent"], q.argmax(-1))
        step = env.step(actions)
        memory.observe(step)
        current = BatchedReset({n: s.next for n, s in step.groups.items()}, step.state)
    env.close()
    assert torch.equal(learner.memory.state("agent", "q"), training)  # untouched
    assert not learner.new_memory(4).state("agent", "q").any()


@pytest.mark.parametrize("sharing,backend", [("shared", "batched"),
                                             ("independent", "batched"),
                                             ("independent", "fork"), ("independent", "loop")])
@pytest.mark.parametrize("algo", ["iql", "vdn", "qmix"])
def test_one_update_trains_every_group_and_moves_every_target(algo: str, sharing: str,
                                                              backend: str) -> None:
    """toy/leave_early: two groups (one entering late), agents leaving early, no global
    state (QMIX mixes on the observations)."""
    learner = _learner(algo, task="toy/leave_early", **{
        "env.kwargs.late_agent": "true", "groups.sharing": sharing,
        "groups.backend": backend})
    _collect(learner, 4)
    before = [[p.detach().clone() for p in module.parameters()]
              for pair in learner.target_pairs() for module in pair]
    metrics = learner.update(0.0)
    assert metrics and all(torch.isfinite(torch.tensor(v)) for v in metrics.values())
    after = [list(module.parameters()) for pair in learner.target_pairs() for module in pair]
    assert len(after) == 2 * (2 + (algo == "qmix"))
    for old, new in zip(before, after, strict=True):
        assert any(not torch.equal(a, b) for a, b in zip(old, new, strict=True))


def test_a_sequence_must_fit_in_the_buffer() -> None:
    with pytest.raises(ConfigError, match=r"algo.burn_in \+ algo.seq_len = 12 steps"):
        _learner(**{"algo.buffer_size": "40", "algo.seq_len": "10"})


# ------------------------------------------------------------------ whole runs
def _metrics(run_dir: Path) -> list[dict[str, float]]:
    clock = {"wall_time", "sps", "eval_time"}
    return [{key: value for key, value in json.loads(line).items() if key not in clock}
            for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _run(tmp_path: Path, name: str, **overrides: str) -> Path:
    base = {"algo.name": "vdn", "env.task": "toy/memory", "env.num_envs": "4",
            "algo.num_steps": "2", "algo.warmup_steps": "64", "algo.batch_size": "32",
            "algo.seq_len": "5", "algo.burn_in": "2", "algo.n_step": "2",
            "groups.hidden": "[8]", "groups.rnn": "gru", "groups.rnn_hidden": "8",
            "train.total_env_steps": "400", "train.log_every": "100",
            "train.eval_every": "200", "train.eval_episodes": "4", "seed": "7",
            "run.dir": str(tmp_path / name), "run.tensorboard": "false",
            "train.progress": "false"}
    return train(load(overrides={**base, **overrides})).run_dir


def test_the_same_seed_gives_the_same_recurrent_run(tmp_path: Path) -> None:
    first, second = (_metrics(_run(tmp_path, name)) for name in ("a", "b"))
    assert len(first) == 4 and "td_loss" in first[-1] and "eval_return" in first[-1]
    assert first == second
    assert _metrics(_run(tmp_path, "c", seed="8")) != first


def test_a_recurrent_run_resumes_with_its_sequence_replay(tmp_path: Path) -> None:
    run_dir = _run(tmp_path, "resumed", **{"train.checkpoint_every": "200"})
    saved = checkpoint.load_replay(run_dir / "checkpoints", 400)
    assert saved is not None and {"agent.first", "episode_step"} <= set(saved["fields"])
    output = io.StringIO()
    resume = {"run.resume": "true", "train.total_env_steps": "600"}
    result = train(load(run_dir / "config.yaml", overrides=resume), stream=output)
    assert "replay buffer restored: 400 transitions" in output.getvalue()
    assert result.env_steps == 600 and "td_loss" in result.last_metrics


# Losses of six seeded updates of the feed-forward learners before recurrent agents existed
# (toy/coop_match, 4 copies, 3-step targets): recurrence must leave that path alone.
FEED_FORWARD_LOSSES = {
    "iql": [2.415891170501709, 3.57033634185791, 3.432497501373291, 3.710211992263794,
            1.2706375122070312, 1.4811254739761353],
    "vdn": [3.2707860469818115, 5.598645210266113, 5.47213888168335, 6.677144527435303,
            1.9157326221466064, 3.2090296745300293],
    "qmix": [9.19382381439209, 16.02875328063965, 17.342416763305664, 8.421154975891113,
             10.641094207763672, 11.161273002624512],
}


@pytest.mark.parametrize("algo", sorted(FEED_FORWARD_LOSSES))
def test_feed_forward_learners_are_unchanged(algo: str) -> None:
    torch.manual_seed(0)
    config = load(overrides={
        "algo.name": algo, "env.task": "toy/coop_match", "env.num_envs": "4",
        "algo.num_steps": "4", "algo.warmup_steps": "16", "algo.n_step": "3",
        "algo.batch_size": "8", "groups.hidden": "[8]", "seed": "0", "algo.buffer_size": "64"})
    learner = make_learner(build_env(config, CPU), config, CPU)
    assert isinstance(learner, QLearning) and learner.sequences is None
    assert not learner.memory.recurrent
    tracker = EpisodeTracker(learner.num_agents, learner.env.num_envs, CPU)
    losses = []
    for _ in range(6):
        learner.collect(tracker)
        losses.append(learner.update(0.0)["loss"])
    assert losses == pytest.approx(FEED_FORWARD_LOSSES[algo], rel=1e-5)


# ------------------------------------------------------------------ learning a memory
# toy/memory: a cue (1 of 4) at the first step, blank steps, a query; reward 1 for naming
# the cue at the query. The optimum is 1 per agent and episode; any memoryless policy gets
# 1/4. Settings found over seeds 0..2 (all reached 1.0 with a GRU, 0.18-0.33 without).
MEMORY_TASK = {
    "env.task": "toy/memory", "env.num_envs": "8", "algo.num_steps": "2",
    "algo.warmup_steps": "500", "algo.batch_size": "160", "algo.gradient_steps": "2",
    "algo.n_step": "1", "optim.lr": "3e-3", "optim.max_grad_norm": "10",
    "groups.activation": "relu", "groups.hidden": "[32]", "groups.rnn_hidden": "32",
    "train.progress": "false", "run.tensorboard": "false",
}


def _learn_memory(tmp_path: Path, name: str, steps: int, **overrides: str) -> Path:
    config = {**MEMORY_TASK, "algo.eps_anneal_steps": str(steps * 2 // 5),
              "train.total_env_steps": str(steps), "train.log_every": str(steps),
              "train.checkpoint_every": str(steps), "run.dir": str(tmp_path / name),
              **overrides}
    return train(load(overrides=config)).run_dir


def _marl_eval(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> float:
    capsys.readouterr()
    assert main(["eval", str(run_dir), "--episodes", "40"]) == 0
    return float(json.loads(capsys.readouterr().out)["episode_return_mean"])


def test_recurrent_vdn_remembers_the_cue_where_the_mlp_cannot(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """About 30 s: sequences of one whole 5-step episode, 5,000 env steps."""
    short = {"algo.seq_len": "5", "algo.burn_in": "0", "algo.name": "vdn", "seed": "0"}
    gru = _learn_memory(tmp_path, "gru", 5000, **short, **{"groups.rnn": "gru"})
    assert _marl_eval(gru, capsys) >= 0.9
    mlp = _learn_memory(tmp_path, "mlp", 5000, **short, **{"groups.rnn": "none"})
    assert _marl_eval(mlp, capsys) <= 0.45


@pytest.mark.slow
@pytest.mark.parametrize("seed", ["0", "1", "2"])
@pytest.mark.parametrize("algo", ["iql", "vdn", "qmix"])
def test_recurrent_q_learners_remember_the_cue(tmp_path: Path, algo: str, seed: str) -> None:
    """About 30 s each: 5,000 env steps with a GRU, then without."""
    short = {"algo.seq_len": "5", "algo.burn_in": "0", "algo.name": algo, "seed": seed}
    gru = _learn_memory(tmp_path, "gru", 5000, **short, **{"groups.rnn": "gru"})
    assert evaluate(gru, episodes=40)["episode_return_mean"] >= 0.9
    mlp = _learn_memory(tmp_path, "mlp", 5000, **short, **{"groups.rnn": "none"})
    assert evaluate(mlp, episodes=40)["episode_return_mean"] <= 0.45


@pytest.mark.slow
def test_burn_in_carries_the_cue_into_later_sequences(tmp_path: Path) -> None:
    """About 3 minutes: 8-step episodes, sequences of 4 steps. The query falls in an
    episode's second sequence, which only a warm-up over the first half (burn_in=4) starts
    from a state that holds the cue; without one VDN stays at chance (seeds 0..2: 1.0 with
    the warm-up, 0.18-0.30 without, at 10,000 env steps)."""
    task = {"env.kwargs.delay": "6", "algo.seq_len": "4", "algo.name": "vdn",
            "groups.rnn": "gru", "seed": "0"}
    warm = _learn_memory(tmp_path, "warm", 10_000, **task, **{"algo.burn_in": "4"})
    assert evaluate(warm, episodes=40)["episode_return_mean"] >= 0.9
    cold = _learn_memory(tmp_path, "cold", 10_000, **task, **{"algo.burn_in": "0"})
    assert evaluate(cold, episodes=40)["episode_return_mean"] <= 0.45
