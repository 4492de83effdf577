"""Graceful stops (SIGTERM, Ctrl-C) and off-policy resumes that keep the replay buffer."""

import io
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from marl import checkpoint
from marl.algos.off_policy import OffPolicy
from marl.algos.q_learning import QLearning
from marl.build import Checkpoints, build_env, make_learner
from marl.cli import main
from marl.config import load
from marl.play import Evaluator
from marl.replay import GroupTransition, ReplayBuffer
from marl.stopping import TrainingInterrupted
from marl.trainer import train

CPU = torch.device("cpu")


def _rows(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_mid_run_writes_a_checkpoint_and_resume_reaches_total(
        tmp_path: Path, signum: int) -> None:
    run_dir = tmp_path / "run"
    args = ["hpset=ippo_tiny", "train.total_env_steps=40000", "train.checkpoint_every=1000000",
            "train.log_every=512", "train.eval_every=0", f"run.dir={run_dir}",
            "run.tensorboard=false", "torch_threads=1"]
    process = subprocess.Popen([sys.executable, "-m", "marl.cli", "train", *args],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    metrics = run_dir / "metrics.jsonl"
    deadline = time.time() + 60
    while not metrics.exists() or len(metrics.read_text().splitlines()) < 2:
        assert process.poll() is None, process.communicate()[0]
        assert time.time() < deadline, "no metrics after 60 s"
        time.sleep(0.1)
    before = metrics.read_text().splitlines()
    process.send_signal(signum)
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 128 + signum, output
    # The only checkpoint is the one the signal asked for, at the step the run stopped.
    (path,) = checkpoint.list_checkpoints(run_dir / "checkpoints")
    stopped_at = checkpoint.load(path)["env_steps"]
    assert 0 < stopped_at < 40000
    assert f"checkpoint written to {path}" in output
    assert f"marl train run.dir={run_dir.resolve()} run.resume=true" in output
    lines = metrics.read_text().splitlines()
    assert lines[:len(before)] == before, "lines written before the signal changed"
    assert json.loads(lines[-1])["env_steps"] == stopped_at
    # Resume with a smaller budget so the test stays short; the run must end exactly there.
    total = stopped_at + 1024
    assert main(["train", f"run.dir={run_dir}", "run.resume=true",
                 f"train.total_env_steps={total}", "train.progress=false"]) == 0
    steps = [row["env_steps"] for row in _rows(run_dir)]
    assert all(a < b for a, b in itertools.pairwise(steps)), steps
    assert steps[-1] >= total and steps[-2] < total
    final = checkpoint.load(checkpoint.latest(run_dir / "checkpoints"))
    assert final["env_steps"] == steps[-1]
    assert metrics.read_text().splitlines()[:len(lines)] == lines


def _vdn(tmp_path: Path, **overrides: str) -> dict[str, str]:
    base = {"algo.name": "vdn", "env.task": "toy/coop_match", "env.num_envs": "4",
            "algo.num_steps": "2", "algo.warmup_steps": "64", "algo.batch_size": "16",
            "algo.buffer_size": "72", "algo.eps_anneal_steps": "400", "groups.hidden": "[16]",
            "train.log_every": "64", "train.checkpoint_every": "64", "train.eval_every": "0",
            "run.dir": str(tmp_path / "run"), "run.tensorboard": "false",
            "train.progress": "false", "torch_threads": "1"}
    base.update(overrides)
    return base


def _restored(overrides: dict[str, str]) -> tuple[QLearning, str]:
    """A fresh learner with the newest checkpoint of the run loaded, and what was printed."""
    config = load(overrides={**overrides, "run.resume": "true"})
    algo = make_learner(build_env(config, CPU), config, CPU)
    assert isinstance(algo, QLearning)
    out = io.StringIO()
    Checkpoints(Path(overrides["run.dir"]), config, out).restore(algo, CPU)
    algo.env.close()
    return algo, out.getvalue()


def test_resumed_vdn_run_keeps_its_buffer_epsilon_and_updates_at_once(tmp_path: Path) -> None:
    overrides = _vdn(tmp_path)
    train(load(overrides={**overrides, "train.total_env_steps": "128"}))
    folder = tmp_path / "run" / "checkpoints"
    # One buffer, tagged with the newest checkpoint's step; 72 transitions = 18 slots of 4.
    assert [p.name for p in folder.glob("replay_*")] == [checkpoint.replay_path(folder, 128).name]
    saved = checkpoint.load_replay(folder, 128)
    assert saved is not None and (saved["size"], saved["pos"]) == (18, 32 % 18)
    algo, printed = _restored(overrides)
    assert "replay buffer restored: 72 transitions" in printed
    assert (algo.replay.size, algo.replay.pos, algo.replay.num_transitions) == (18, 14, 72)
    torch.testing.assert_close(algo.replay.storage["agent"].obs,
                               saved["fields"]["agent.obs"])
    assert algo.env_steps == 128
    assert algo.epsilon() == pytest.approx(1.0 + (0.05 - 1.0) * 128 / 400)
    # The episodes in flight end at the newest step: it reads as a truncation of every copy.
    assert not saved["fields"]["team_truncated"][13].any()
    assert algo.replay.team_truncated[13].all()
    assert "td_loss" in algo.update(0.5)
    # End to end: the first update after the resume trains (a refill would return {}).
    train(load(overrides={**overrides, "train.total_env_steps": "136", "run.resume": "true"}))
    rows = _rows(tmp_path / "run")
    assert [r["env_steps"] for r in rows] == [64, 128, 136]
    assert "td_loss" in rows[-1]
    assert [p.name for p in folder.glob("replay_*")] == [checkpoint.replay_path(folder, 136).name]


def test_buffer_over_the_size_limit_is_left_out_with_a_warning(tmp_path: Path) -> None:
    overrides = _vdn(tmp_path, **{"train.replay_checkpoint_mb": "0.001"})  # 1,000 bytes
    out = io.StringIO()
    train(load(overrides={**overrides, "train.total_env_steps": "128"}), stream=out)
    text = out.getvalue()
    assert text.count("warning: the replay buffer holds") == 1
    assert "over train.replay_checkpoint_mb=0.001" in text and "refills it" in text
    assert not list((tmp_path / "run" / "checkpoints").glob("replay_*"))
    out = io.StringIO()
    train(load(overrides={**overrides, "train.total_env_steps": "136", "run.resume": "true"}),
          stream=out)
    assert "no replay buffer was saved with step_000000000128.pt" in out.getvalue()
    assert "td_loss" not in _rows(tmp_path / "run")[-1]  # refilling: 8 < 64 transitions


def test_second_signal_mid_save_leaves_the_previous_checkpoint_and_its_buffer(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    overrides = _vdn(tmp_path, **{"train.total_env_steps": "400"})
    collect, real_save = OffPolicy.collect, torch.save
    calls = []

    def collect_then_signal(self: OffPolicy, tracker: Any) -> int:
        steps = collect(self, tracker)
        calls.append(steps)
        if len(calls) == 12:  # 96 env steps: the first SIGTERM, mid-iteration
            os.kill(os.getpid(), signal.SIGTERM)
        return steps

    def save_then_signal(state: Any, path: Any) -> None:
        if isinstance(state, dict) and "optimizer" in state and state["env_steps"] == 96:
            Path(path).write_bytes(b"half a checkpoint")
            os.kill(os.getpid(), signal.SIGTERM)  # the second, while writing it
        real_save(state, path)

    monkeypatch.setattr(OffPolicy, "collect", collect_then_signal)
    monkeypatch.setattr(torch, "save", save_then_signal)
    out = io.StringIO()
    with pytest.raises(TrainingInterrupted) as stopped:
        train(load(overrides=overrides), stream=out)
    folder = tmp_path / "run" / "checkpoints"
    assert stopped.value.exit_code == 128 + signal.SIGTERM
    assert stopped.value.checkpoint == folder / "step_000000000064.pt"
    assert "SIGTERM again: stopped at once; the newest complete checkpoint is" in out.getvalue()
    assert sorted(p.name for p in folder.iterdir()) == [
        "replay_step_000000000064.pt", "replay_step_000000000096.pt", "step_000000000064.pt"]
    monkeypatch.undo()
    algo, printed = _restored(overrides)
    assert "replay buffer restored: 64 transitions" in printed  # the buffer of step 64
    assert algo.env_steps == 64


def test_signal_during_an_evaluation_still_stops_with_a_checkpoint_at_that_step(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    evaluate = Evaluator.__call__

    def evaluate_then_signal(self: Evaluator, algo: Any) -> dict[str, float]:
        os.kill(os.getpid(), signal.SIGINT)
        return evaluate(self, algo)

    monkeypatch.setattr(Evaluator, "__call__", evaluate_then_signal)
    config = load(overrides={"hpset": "ippo_tiny", "train.total_env_steps": "4096",
                             "train.log_every": "100000", "train.checkpoint_every": "100000",
                             "train.eval_every": "384", "train.eval_episodes": "4",
                             "run.dir": str(tmp_path / "run"), "run.tensorboard": "false",
                             "train.progress": "false"})
    with pytest.raises(TrainingInterrupted) as stopped:
        train(config, stream=io.StringIO())
    # The evaluation at 384 env steps (3 iterations of 128) ran; the stop followed it.
    assert stopped.value.exit_code == 130
    assert stopped.value.checkpoint == tmp_path / "run" / "checkpoints" / "step_000000000384.pt"
    (row,) = _rows(tmp_path / "run")
    assert row["env_steps"] == 384 and "eval_return" in row and "episode_return" in row


def _filled(capacity: int, steps: int) -> ReplayBuffer:
    layout = {"agent": (2, 3, (), torch.int64)}
    buffer = ReplayBuffer(capacity, 2, layout, 1, CPU)
    for step in range(steps):
        shape = (2, 2)
        flag = torch.zeros(shape, dtype=torch.bool)
        transition = GroupTransition(
            obs=torch.full((*shape, 3), float(step)), action=torch.full(shape, step % 4),
            reward=torch.full(shape, float(step)), terminated=flag, truncated=flag,
            alive=~flag, final_obs=torch.full((*shape, 3), step + 0.5))
        state = torch.full((2, 1), float(step))
        buffer.add({"agent": transition}, torch.zeros(2, dtype=torch.bool), state, state + 0.5)
    return buffer


def test_replay_state_holds_the_filled_slots_only_and_samples_alike_after_loading() -> None:
    buffer = _filled(capacity=100, steps=3)
    state = buffer.state_dict()
    assert (state["size"], state["pos"]) == (3, 3)
    assert all(value.shape[0] == 3 for value in state["fields"].values())
    # Per slot of 2 copies: obs and final_obs 2x2x3 float32, action 2x2 int64, reward 2x2
    # float32, three 2x2 bools; team reward float32, two team bools; state, final_state.
    per_slot = 2 * 2 * (2 * 3 * 4 + 8 + 4 + 3) + 2 * (4 + 2) + 2 * 2 * 4
    assert buffer.nbytes() == 3 * per_slot
    fresh = _filled(capacity=100, steps=0)
    fresh.load_state_dict(state)
    first = buffer.sample(8, 1, 0.9, torch.Generator().manual_seed(0))
    second = fresh.sample(8, 1, 0.9, torch.Generator().manual_seed(0))
    torch.testing.assert_close(first.groups["agent"].obs, second.groups["agent"].obs)
    # The newest slot now ends every copy's episode; the loaded one did not.
    assert fresh.team_truncated[2].all() and not buffer.team_truncated[2].any()
    with pytest.raises(ValueError, match="100 slots of 2 env copies, this run's 50 of 2"):
        _filled(capacity=50, steps=0).load_state_dict(state)


def test_signal_handlers_are_put_back_after_a_run(tmp_path: Path) -> None:
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    config = load(overrides={"hpset": "ippo_tiny", "train.total_env_steps": "256",
                             "run.dir": str(tmp_path / "run"), "run.tensorboard": "false",
                             "train.progress": "false", "train.eval_every": "0"})
    assert train(config).env_steps == 256
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before
