"""The training loop end to end: determinism, checkpoints, resume, bad input, the CLI."""

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from marl import checkpoint
from marl.algos.base import NonFiniteLossError
from marl.algos.ppo import PPO
from marl.build import build_env, load_modules
from marl.cli import main
from marl.config import ConfigError, load
from marl.evaluate import evaluate
from marl.trainer import train

TESTS = Path(__file__).parent


def _tiny(tmp_path: Path, name: str, **overrides: str) -> dict[str, str]:
    base = {"hpset": "ippo_tiny", "train.total_env_steps": "2048", "train.log_every": "512",
            "train.checkpoint_every": "1024", "run.dir": str(tmp_path / name),
            "run.tensorboard": "false", "train.progress": "false", "torch_threads": "1"}
    base.update(overrides)
    return base


def _metrics(run_dir: Path) -> list[dict[str, float]]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _without_timing(rows: list[dict[str, float]]) -> list[dict[str, float]]:
    return [{k: v for k, v in row.items() if k not in ("wall_time", "sps", "eval_time")}
            for row in rows]


def test_same_seed_gives_identical_metrics(tmp_path: Path) -> None:
    first = train(load(overrides=_tiny(tmp_path, "a", seed="3")))
    second = train(load(overrides=_tiny(tmp_path, "b", seed="3")))
    third = train(load(overrides=_tiny(tmp_path, "c", seed="4")))
    a, b, c = (_without_timing(_metrics(r.run_dir)) for r in (first, second, third))
    assert len(a) == 4 and a == b
    assert a != c
    row = a[-1]
    assert row["env_steps"] >= 2048 and row["episodes"] > 0
    assert {"episode_return", "episode_return/agent", "agent/policy", "agent/value"} <= set(row)


def test_run_directory_and_checkpoint_round_trip(tmp_path: Path) -> None:
    result = train(load(overrides=_tiny(tmp_path, "run", **{"run.tensorboard": "true"})))
    run_dir = result.run_dir
    assert (run_dir / "config.yaml").read_text().startswith(
        "# groups.encoder=auto chose: agent=mlp\n")
    assert any(p.name.startswith("events.out.tfevents") for p in run_dir.iterdir())
    saved = load(run_dir / "config.yaml")
    assert saved.train.total_env_steps == 2048 and saved.env.task == "toy/coop_match"
    path = checkpoint.latest(run_dir / "checkpoints")
    state = checkpoint.load(path)
    assert state["env_steps"] == result.env_steps
    env = build_env(saved, torch.device("cpu"))
    fresh = PPO(env, saved, torch.device("cpu"))
    obs = torch.randn(5, 2, fresh.groups["agent"].obs_features)
    before = fresh.groups["agent"].actor(obs)
    load_modules(fresh, state, path)
    after = fresh.groups["agent"].actor(obs)
    assert not torch.allclose(before, after)
    again = PPO(env, saved, torch.device("cpu"))
    load_modules(again, state, path)
    torch.testing.assert_close(again.groups["agent"].actor(obs), after)
    env.close()


def test_kill_mid_run_then_resume_reaches_total_steps(tmp_path: Path) -> None:
    run_dir = tmp_path / "killed"
    args = ["hpset=ippo_tiny", "train.total_env_steps=40000", "train.checkpoint_every=1024",
            "train.log_every=1024", f"run.dir={run_dir}", "run.tensorboard=false",
            "torch_threads=1"]
    process = subprocess.Popen([sys.executable, "-m", "marl.cli", "train", *args],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while len(checkpoint.list_checkpoints(run_dir / "checkpoints")) < 2:
        assert process.poll() is None, process.stderr.read() if process.stderr else ""
        assert time.time() < deadline, "no checkpoint after 120 s"
        time.sleep(0.2)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    stopped_at = checkpoint.load(checkpoint.latest(run_dir / "checkpoints"))["env_steps"]
    assert stopped_at < 40000
    # Resume with a smaller budget so the test stays short; the run must end exactly there.
    code = main(["train", f"run.dir={run_dir}", "run.resume=true",
                 f"train.total_env_steps={stopped_at + 2048}", "train.progress=false"])
    assert code == 0
    rows = _metrics(run_dir)
    steps = [row["env_steps"] for row in rows]
    assert steps == sorted(set(steps)), "metrics lines repeated or out of order after resume"
    assert steps[-1] >= stopped_at + 2048
    final = checkpoint.load(checkpoint.latest(run_dir / "checkpoints"))
    assert final["env_steps"] == steps[-1]
    assert final["wall_time"] > 0


def test_nan_loss_stops_with_step_and_group_and_keeps_last_checkpoint(tmp_path: Path) -> None:
    overrides = _tiny(tmp_path, "nan", **{"env.task": "toy_factories:coop_match_nan_after",
                                          "env.kwargs.after": "150",
                                          "train.checkpoint_every": "128",
                                          "algo.reward_norm": "none"})
    with pytest.raises(NonFiniteLossError, match=r"at env step .*group agent"):
        train(load(overrides=overrides))
    kept = checkpoint.list_checkpoints(tmp_path / "nan" / "checkpoints")
    assert kept, "the last good checkpoint was removed"
    state = checkpoint.load(kept[-1])
    for tensor in state["modules"]["groups"].values():
        assert torch.isfinite(tensor).all()


def test_corrupt_checkpoint_is_reported_clearly(tmp_path: Path) -> None:
    result = train(load(overrides=_tiny(tmp_path, "corrupt")))
    files = checkpoint.list_checkpoints(result.run_dir / "checkpoints")
    files[-1].write_bytes(b"not a checkpoint")
    with pytest.raises(checkpoint.CheckpointError, match=f"{files[-1].name} is corrupt.*"
                       f"earlier checkpoints in the folder: {files[0].name}"):
        evaluate(result.run_dir, episodes=2)
    assert files[0].exists()  # nothing else was touched


def test_existing_run_directory_is_not_overwritten(tmp_path: Path) -> None:
    train(load(overrides=_tiny(tmp_path, "taken")))
    with pytest.raises(Exception, match="run.resume=true"):
        train(load(overrides=_tiny(tmp_path, "taken")))


def test_eval_prints_mean_and_confidence_interval(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    result = train(load(overrides=_tiny(tmp_path, "evaluated")))
    capsys.readouterr()
    assert main(["eval", str(result.run_dir), "--episodes", "12"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["episodes"] == 12
    low, high = report["ci95"]
    assert low <= report["episode_return_mean"] <= high
    assert set(report["per_group"]) == {"agent"}


def test_cli_help_lists_keys(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = capsys.readouterr().out
    for key in ("env.task", "env.kwargs", "groups.sharing", "groups.backend", "groups.agent_id",
                "optim.lr", "train.total_env_steps", "seed", "device", "run.dir"):
        assert key in text


def test_cli_reports_bad_input_without_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "optim.lrr=0.1"]) == 2
    assert "did you mean 'optim.lr'" in capsys.readouterr().err
    assert main(["train", "env.task=mpe2/simple_sprad_v3", "run.dir=/nonexistent/x"]) != 0
    err = capsys.readouterr().err
    assert "simple_spread_v3" in err and "Traceback" not in err


def test_input_wrappers_are_applied_when_the_env_is_built(tmp_path: Path) -> None:
    overrides = _tiny(tmp_path, "wrapped", **{
        "env.task": "toy/grid_nav", "env.kwargs.size": "4", "env.frame_stack": "3",
        "env.action_repeat": "2", "env.agent_centric": "{vectors: [75]}",
        "train.total_env_steps": "256"})
    config = load(overrides=overrides)
    env = build_env(config, torch.device("cpu"))
    assert env.groups["agent"].obs_shape == (3 * 77,)
    env.close()
    result = train(config)
    assert result.env_steps >= 256 and _metrics(result.run_dir)
    bad = load(overrides={**overrides, "env.agent_centric": "{vectors: [76]}"})
    with pytest.raises(ConfigError, match="vectors starting at 76 needs features 76 and 77"):
        build_env(bad, torch.device("cpu"))


@pytest.mark.parametrize(("task", "algo"), [("torch/simple_spread_v3", "ippo"),
                                            ("torch/simple_speaker_listener_v4", "mappo")])
def test_trains_on_torch_mpe_tasks(tmp_path: Path, task: str, algo: str) -> None:
    overrides = _tiny(tmp_path, "run", **{"env.task": task, "algo.name": algo,
                                          "env.num_envs": "64", "env.kwargs.max_cycles": "8"})
    config = load(overrides=overrides)
    env = build_env(config, torch.device("cpu"))
    assert env.device == torch.device("cpu") and env.num_envs == 64
    assert (env.state_shape is not None) == (algo == "mappo")
    rows = _metrics(train(config).run_dir)
    assert rows[-1]["env_steps"] >= 2048
    # 64 copies, 8-step episodes: every logged window holds finished episodes of length 8.
    assert all(row["episodes"] > 0 and row["episode_length"] == 8 for row in rows)
    assert all(math.isfinite(value) for row in rows for value in row.values())


def test_a_config_the_learner_refuses_leaves_no_run_directory(tmp_path: Path) -> None:
    """The encoder is checked when the networks are built, after the env: the error must
    not leave an empty run directory behind."""
    run_dir = tmp_path / "run"
    config = load(overrides={"env.task": "toy/coop_match", "groups.encoder": "cnn",
                             "run.dir": str(run_dir), "run.tensorboard": "false"})
    with pytest.raises(ConfigError, match="encoder 'cnn' does not take observations"):
        train(config)
    assert not run_dir.exists()
