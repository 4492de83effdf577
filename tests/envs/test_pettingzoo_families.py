"""Quick training runs on the PettingZoo families the ``pettingzoo`` extra installs.

SISL ``multiwalker_v9``: continuous actions, walkers that fall end their part of the
episode. Butterfly ``knights_archers_zombies_v11`` (vector observations): two groups
whose ``[27, 5]`` entity rows (zero rows for absent entities) go to the entity encoder.
Skipped where the extras are not installed (``pip install -e ".[pettingzoo]"``).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import gymnasium
import marl_envs
import pytest
import torch

from marl.build import build_env, make_learner
from marl.config import load
from marl.group_nets import resolved_encoders
from marl.trainer import train

pytest.importorskip("Box2D", reason='needs pip install -e ".[pettingzoo]"')
pytest.importorskip("pymunk", reason='needs pip install -e ".[pettingzoo]"')


def _lines(run_dir: Path) -> list[dict[str, float]]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _quick(tmp_path: Path, task: str, steps: int, **extra: object) -> list[dict[str, float]]:
    overrides = {"env.task": task, "env.num_envs": 2, "algo.num_steps": 50,
                 "train.total_env_steps": steps, "train.log_every": steps // 2,
                 "train.eval_every": 0, "train.checkpoint_every": steps,
                 "train.progress": False, "run.tensorboard": False,
                 "run.dir": str(tmp_path / "run"), **extra}
    before = torch.get_num_threads()
    try:
        result = train(load(None, overrides))
    finally:
        torch.set_num_threads(before)
    assert result.env_steps >= steps
    return _lines(result.run_dir)


def _finite_losses(line: dict[str, float], group: str) -> None:
    losses = {k: v for k, v in line.items() if k.startswith(f"{group}/")}
    assert {f"{group}/policy", f"{group}/value", f"{group}/entropy"} <= set(losses)
    assert all(math.isfinite(v) for v in losses.values())


def test_multiwalker_trains_with_continuous_actions(tmp_path: Path) -> None:
    env = marl_envs.make("sisl/multiwalker_v9", num_envs=2)
    try:
        spec = env.groups["walker"]
        assert isinstance(spec.action_space, gymnasium.spaces.Box)
        assert spec.num_agents == 3
    finally:
        env.close()
    lines = _quick(tmp_path, "sisl/multiwalker_v9", 1_000)
    assert len(lines) == 2
    # Walkers fall within a few dozen random steps: episodes end and are counted.
    assert sum(line["episodes"] for line in lines) > 0
    assert all(math.isfinite(line["episode_return"]) for line in lines if line["episodes"])
    for line in lines:
        _finite_losses(line, "walker")


def test_knights_archers_zombies_trains_through_the_entity_encoder(tmp_path: Path) -> None:
    config = load(None, {"env.task": "butterfly/knights_archers_zombies_v11",
                         "env.num_envs": 2})
    env = build_env(config, torch.device("cpu"))
    try:
        assert {name: spec.obs_shape for name, spec in env.groups.items()} == {
            "archer": (27, 5), "knight": (27, 5)}
        assert resolved_encoders(env.groups, config.groups) == {
            "archer": "entity", "knight": "entity"}
        learner = make_learner(env, config, torch.device("cpu"))
        names = {type(m).__name__ for m in learner.modules()["groups"].modules()}
        assert any("Entity" in name for name in names), names
    finally:
        env.close()
    lines = _quick(tmp_path, "butterfly/knights_archers_zombies_v11", 200)
    saved = (tmp_path / "run" / "config.yaml").read_text()
    assert saved.startswith("# groups.encoder=auto chose: archer=entity, knight=entity\n")
    assert load(tmp_path / "run" / "config.yaml").groups.encoder == "auto"
    assert len(lines) == 2
    for line in lines:
        _finite_losses(line, "archer")
        _finite_losses(line, "knight")
