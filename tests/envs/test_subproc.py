"""SubprocVectorEnv: identical to SyncVectorEnv, and workers that always go away."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import marl_envs
import numpy as np
import pytest
import torch
from hand_stepping import draw_actions
from marl_envs import BatchedEnv, SubprocVectorEnv, SyncVectorEnv, TaskFactory, WorkerError
from pettingzoo import ParallelEnv
from tiny_parallel_envs import failing_env, hetero_env


def _flatten(result: marl_envs.BatchedStep | marl_envs.BatchedReset) -> list[torch.Tensor | None]:
    tensors: list[torch.Tensor | None] = [result.state]
    if isinstance(result, marl_envs.BatchedStep):
        tensors += [result.env_done, result.final_state]
    for group in result.groups.values():
        if isinstance(group, marl_envs.GroupStep):
            tensors += [group.reward, group.terminated, group.truncated, group.final_obs]
            group = group.next
        tensors += [group.obs, group.alive, group.action_mask]
    return tensors


def _trace(env: BatchedEnv, seed: int, num_steps: int) -> list[torch.Tensor | None]:
    rng = np.random.default_rng(seed)
    tensors = _flatten(env.reset(seed=seed))
    for _ in range(num_steps):
        actions, _ = draw_actions(env.groups, env.num_envs, rng)
        tensors += _flatten(env.step(actions))
    return tensors


@pytest.mark.parametrize(
    ("env_fn", "num_envs", "num_workers"),
    [
        (TaskFactory("mpe2/simple_spread_v3"), 5, 2),  # uneven split: 3 + 2 copies
        (TaskFactory("toy/leave_early", {"late_agent": True}), 3, 3),
        (TaskFactory("mpe2/simple_speaker_listener_v4", {}, 7), 2, 1),
        (hetero_env, 4, 2),  # padding, Dict and info masks, Box actions, no state
    ],
)
def test_subprocess_matches_sync_exactly(
    env_fn: Callable[[], ParallelEnv], num_envs: int, num_workers: int
) -> None:
    with SyncVectorEnv(env_fn, num_envs) as sync_env:
        expected = _trace(sync_env, seed=11, num_steps=30)
    with SubprocVectorEnv(env_fn, num_envs, num_workers=num_workers) as subprocess_env:
        assert subprocess_env.groups.keys() == sync_env.groups.keys()
        actual = _trace(subprocess_env, seed=11, num_steps=30)
    assert len(actual) == len(expected)
    for index, (got, want) in enumerate(zip(actual, expected, strict=True)):
        if want is None:
            assert got is None, index
        else:
            assert got is not None and torch.equal(got, want), index


def test_make_subprocess_and_spawn_start_method() -> None:
    env = marl_envs.make("toy/coop_match", num_envs=2, vector="subprocess", num_workers=2)
    reset = env.reset(seed=0)
    assert reset.groups["agent"].obs.shape == (2, 2, 3)
    env.close()
    spawned = SubprocVectorEnv(TaskFactory("toy/endless"), 1, start_method="spawn")
    assert spawned.reset(seed=0).groups["agent"].obs.shape == (1, 2, 4)
    spawned.close()


def test_close_stops_workers_and_is_idempotent() -> None:
    env = SubprocVectorEnv(TaskFactory("toy/endless"), 4, num_workers=2)
    env.reset(seed=0)
    processes = list(env._processes)
    assert all(process.is_alive() for process in processes)
    env.close()
    assert env.closed
    assert not any(process.is_alive() for process in processes)
    env.close()
    with pytest.raises(RuntimeError, match="closed"):
        env.reset(seed=0)


def test_worker_exception_is_raised_with_its_traceback_and_closes_env() -> None:
    env = SubprocVectorEnv(failing_env, 2, num_workers=2)
    env.reset(seed=0)
    actions = {"agent": torch.zeros(2, 1, dtype=torch.int64)}
    env.step(actions)
    env.step(actions)
    with pytest.raises(WorkerError, match="failed on purpose at step 3"):
        env.step(actions)
    assert env.closed


def test_unpicklable_env_fn_is_refused_with_alternatives() -> None:
    with pytest.raises(TypeError, match="TaskFactory"):
        SubprocVectorEnv(lambda: hetero_env(), 1)


def test_bad_worker_count_and_start_method() -> None:
    with pytest.raises(ValueError, match=r"num_workers must be an int in 1\.\.num_envs=2"):
        SubprocVectorEnv(TaskFactory("toy/endless"), 2, num_workers=3)
    with pytest.raises(ValueError, match="'fork' is not supported"):
        SubprocVectorEnv(TaskFactory("toy/endless"), 2, start_method="fork")


_ORPHAN_SCRIPT = """
import os, signal, sys
sys.path.insert(0, {tests_dir!r})
import marl_envs

if __name__ == "__main__":
    env = marl_envs.make("toy/endless", num_envs=2, vector="subprocess", num_workers=2)
    env.reset(seed=0)
    print(" ".join(str(process.pid) for process in env._processes), flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
"""


def _running(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "State:\tZ" not in status


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_workers_exit_when_the_parent_is_killed(tmp_path: Path) -> None:
    script = tmp_path / "orphan.py"
    script.write_text(_ORPHAN_SCRIPT.format(tests_dir=str(Path(__file__).parent)))
    result = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == -signal.SIGKILL, result.stderr
    pids = [int(pid) for pid in result.stdout.split()]
    assert len(pids) == 2
    deadline = time.monotonic() + 10
    while any(_running(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    survivors = [pid for pid in pids if _running(pid)]
    for pid in survivors:
        os.kill(pid, signal.SIGKILL)
    assert not survivors
