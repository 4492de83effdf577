"""Evaluate a trained run: mean per-agent episode return with a 95% confidence interval.

The episodes are played by :func:`marl.play.play_episodes`, the same code that evaluates
during training (``train.eval_every``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from marl import checkpoint
from marl.build import build_env, load_modules, make_learner, resolve_device
from marl.config import CHOICES, Config, ConfigError, apply, load
from marl.play import bootstrap_ci, play_episodes

__all__ = ["bootstrap_ci", "evaluate"]


def evaluate(run_dir: str | Path, episodes: int = 20, greedy: bool = False,
             seed: int = 12345, device: str | None = None) -> dict[str, Any]:
    """Run the latest checkpoint of ``run_dir`` for ``episodes`` episodes.

    Observation statistics are frozen; a PPO policy samples its actions unless
    ``greedy``; off-policy learners always act greedily (Q methods) or take the
    actor's action without noise (MADDPG, MATD3). The episodes are spread over
    ``min(episodes, env.num_envs)`` env copies, each counting a number of episodes fixed
    in advance (see :func:`marl.play.play_episodes`).
    """
    if isinstance(episodes, bool) or not isinstance(episodes, int) or episodes < 1:
        raise ConfigError(f"episodes: expected an integer >= 1, got {episodes!r}; "
                          "e.g. --episodes 20")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32:
        raise ConfigError(f"seed: expected an integer in [0, {2**32 - 1}], got {seed!r}; "
                          "e.g. --seed 12345")
    if device is not None and device not in CHOICES["device"]:
        raise ConfigError(f"device: expected one of {', '.join(CHOICES['device'])}, got "
                          f"{device!r}; e.g. --device cpu")
    run_dir = Path(run_dir)
    config_path = run_dir / "config.yaml"
    if not config_path.is_file():
        raise FileNotFoundError(f"{run_dir} is not a run directory: no config.yaml in it "
                                "(pass the folder `marl train` printed as its run directory)")
    path = checkpoint.latest(run_dir / "checkpoints")
    config: Config = load(config_path)
    num_envs = max(1, min(episodes, config.env.num_envs))
    overrides: dict[str, Any] = {"env.num_envs": num_envs, "env.vector": "sync",
                                 "env.num_workers": None, "seed": seed}
    config = apply(config, overrides)
    torch_device = resolve_device(device or config.device)
    env = build_env(config, torch_device)
    try:
        algo = make_learner(env, config, torch_device)
        state = checkpoint.load(path, map_location=torch_device)
        load_modules(algo, state, path)
        result = play_episodes(algo, env, episodes, seed, sample=not greedy)
    finally:
        env.close()
    returns = result.returns
    low, high = bootstrap_ci(returns)
    per_group = {name: float(np.mean(values)) for name, values in result.group_returns.items()}
    return {"run_dir": str(run_dir), "checkpoint": str(path), "env_steps": int(state["env_steps"]),
            "episodes": len(returns), "greedy": greedy or not algo.samples_actions,
            "episode_return_mean": float(np.mean(returns)), "ci95": [low, high],
            "episode_return_std": float(np.std(returns)), "per_group": per_group}
