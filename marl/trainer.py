"""The training loop: collect a rollout, update every group, log, checkpoint, repeat.

One iteration, in the three files that hold it: :meth:`marl.algos.ppo.PPO.collect`
steps the batched env and fills the rollout storage, :meth:`marl.algos.ppo.PPO.update`
computes GAE and sums every group's PPO loss (:mod:`marl.groups` holds the networks)
into one backward and one optimiser step. The off-policy algorithms (IQL, VDN, QMIX in
:mod:`marl.algos.q_learning`; MADDPG, MATD3 in :mod:`marl.algos.ddpg`) follow the same two
calls: ``collect`` steps into a replay buffer, ``update`` takes gradient steps on sampled
batches and moves the target networks (:mod:`marl.algos.off_policy`). This file only wires
them together, with evaluation in env copies of its own (:mod:`marl.play`), checkpoints
(:mod:`marl.checkpoint`; off-policy runs keep their replay buffer beside them) and stops
on SIGINT / SIGTERM that write a checkpoint first (:mod:`marl.stopping`).
"""

from __future__ import annotations

import dataclasses
import random
import re
import signal
import sys
import time
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import torch
from marl_envs import make as make_env
from marl_envs import wrap as wrap_env
from marl_envs.core import BatchedEnv

from marl import checkpoint
from marl.algos.ddpg import DDPG
from marl.algos.off_policy import CONTINUOUS_ALGOS, DISCRETE_ALGOS, OffPolicy
from marl.algos.ppo import PPO, NonFiniteLossError
from marl.algos.q_learning import QLearning
from marl.config import Config, ConfigError, apply, dump, flatten, to_dict
from marl.logging import EpisodeTracker, MetricsWriter
from marl.play import EVAL_SEED_OFFSET, Evaluator, preserved_rng
from marl.stopping import StopSignals, interrupted


@dataclasses.dataclass
class RunResult:
    """What a finished run leaves behind."""

    run_dir: Path
    env_steps: int
    last_metrics: dict[str, float]


def train(config: Config, stream: TextIO = sys.stdout) -> RunResult:
    """Train with ``config``; return the run directory and the last metrics.

    Raises:
        TrainingInterrupted: SIGINT or SIGTERM stopped the run (after a checkpoint).
    """
    run_dir = _run_dir(config)
    _seed(config.seed)
    if config.torch_threads is not None:
        torch.set_num_threads(config.torch_threads)
    device = resolve_device(config.device)
    env = build_env(config, device)
    algo = make_algorithm(env, config, device)
    evaluator = _evaluator(config, device)
    tracker = EpisodeTracker({n: s.num_agents for n, s in env.groups.items()}, env.num_envs,
                             device)
    writer = MetricsWriter(run_dir, config.run.tensorboard, config.train.progress,
                           config.train.total_env_steps, stream)
    saver = _Checkpoints(run_dir, config, stream)
    env_steps, wall_offset = 0, 0.0
    if config.run.resume and checkpoint.list_checkpoints(saver.directory):
        env_steps, wall_offset = saver.restore(algo, device)
        writer.truncate_after(env_steps)
        algo.reset_env(seed=config.seed + env_steps)
        stream.write(f"resuming {run_dir} from env step {env_steps:,}\n")
    dump(config, run_dir / "config.yaml")
    writer.hparams(flatten(to_dict(config)))
    loop = _Loop(config, algo, tracker, writer, saver, evaluator, env_steps, wall_offset)
    stop = StopSignals()
    try:
        with stop:
            try:
                metrics = loop.run(stop)
            finally:
                env.close()
                if evaluator is not None:
                    evaluator.close()
                writer.close()
    except KeyboardInterrupt as error:  # a second signal: quit now, files are atomic
        forced = interrupted(run_dir, saver.directory, stop.signum or signal.SIGINT,
                             loop.env_steps, saved=False)
        stream.write(f"\n{forced}\n")
        raise forced from error
    if stop.signum is not None and loop.env_steps < config.train.total_env_steps:
        message = interrupted(run_dir, saver.directory, stop.signum, loop.env_steps,
                              saved=True)
        stream.write(f"{message}\n")
        stream.flush()
        raise message
    stream.write(f"run directory: {run_dir}\n"
                 f"open it with:  tensorboard --logdir {run_dir}\n")
    return RunResult(run_dir, loop.env_steps, metrics)


class _Loop:
    """The loop of :func:`train`: collect, update, log (and evaluate), checkpoint."""

    def __init__(self, config: Config, algo: Algorithm, tracker: EpisodeTracker,
                 writer: MetricsWriter, saver: _Checkpoints, evaluator: Evaluator | None,
                 env_steps: int, wall_offset: float) -> None:
        self.config, self.algo, self.tracker = config, algo, tracker
        self.writer, self.saver, self.evaluator = writer, saver, evaluator
        self.env_steps, self.wall_offset = env_steps, wall_offset
        self.start = self.last_time = time.perf_counter()
        self.last_steps, self.eval_seconds = env_steps, 0.0

    def run(self, stop: StopSignals) -> dict[str, float]:
        """Iterate until ``train.total_env_steps`` or a stop signal; return the last metrics."""
        train_cfg, algo = self.config.train, self.algo
        total = train_cfg.total_env_steps
        next_log = _next_multiple(self.env_steps, train_cfg.log_every)
        next_checkpoint = _next_multiple(self.env_steps, train_cfg.checkpoint_every)
        next_eval = _next_multiple(self.env_steps, max(train_cfg.eval_every, 1))
        self.start = self.last_time = time.perf_counter()
        metrics: dict[str, float] = {}
        losses: dict[str, float] = {}
        written = saved = self.env_steps
        while self.env_steps < total and stop.signum is None:
            progress = self.env_steps / total
            self.env_steps += algo.collect(self.tracker)
            losses = self._update(progress)
            finished = self.env_steps >= total
            results = None
            if self.evaluator is not None and (self.env_steps >= next_eval or finished):
                results = self._evaluate()
                next_eval = _next_multiple(self.env_steps, train_cfg.eval_every)
            if self.env_steps >= next_checkpoint or finished:
                self.saver.save(algo, self.env_steps, self._wall_time())
                saved = self.env_steps
                next_checkpoint = _next_multiple(self.env_steps, train_cfg.checkpoint_every)
            # Decided last, so a signal that came during the evaluation or the checkpoint
            # also gets this step's training statistics written.
            log = self.env_steps >= next_log or finished or stop.signum is not None
            if log or results is not None:
                metrics = self._metrics(losses if log else None, results)
                self.writer.write(metrics)
                written = self.env_steps
            if log:
                next_log = _next_multiple(self.env_steps, train_cfg.log_every)
        if stop.signum is not None and self.env_steps < total:
            # Stopped by a signal after a whole iteration: keep its statistics and state.
            if written != self.env_steps:
                metrics = self._metrics(losses, None)
                self.writer.write(metrics)
            if saved != self.env_steps:
                self.saver.save(algo, self.env_steps, self._wall_time())
        return metrics

    def _wall_time(self) -> float:
        return self.wall_offset + time.perf_counter() - self.start

    def _evaluate(self) -> dict[str, float]:
        assert self.evaluator is not None
        results = self.evaluator(self.algo)
        self.eval_seconds += results["eval_time"]  # left out of the steps per second
        return results

    def _metrics(self, losses: dict[str, float] | None,
                 results: dict[str, float] | None) -> dict[str, float]:
        """One metrics line: training statistics when ``losses`` are given (a log step),
        and the evaluation's ``results``. An evaluation between log steps gets a line of
        its own, so the training windows are the same with evaluation on or off."""
        metrics: dict[str, float] = {"env_steps": self.env_steps, "wall_time": self._wall_time()}
        if losses is not None:
            now = time.perf_counter()
            seconds = now - self.last_time - self.eval_seconds
            metrics.update(sps=(self.env_steps - self.last_steps) / max(seconds, 1e-9),
                           **self.tracker.pop(), **losses)
            self.last_time, self.last_steps, self.eval_seconds = now, self.env_steps, 0.0
        return {**metrics, **(results or {})}

    def _update(self, progress: float) -> dict[str, float]:
        try:
            return self.algo.update(progress)
        except NonFiniteLossError as error:
            raise NonFiniteLossError(
                f"at env step {self.env_steps:,}: {error}. The run stopped without writing a "
                f"checkpoint; the last good one is in {self.saver.directory}"
            ) from error


Algorithm = PPO | OffPolicy
"""What :func:`make_algorithm` returns: each has ``collect``, ``update``, ``modules``,
``optimizer`` and ``reset_env``."""

# Algorithms whose critic or mixer reads the global state (env.state()).
_STATE_ALGOS = ("mappo", "qmix", *CONTINUOUS_ALGOS)


def make_algorithm(env: BatchedEnv, config: Config, device: torch.device) -> Algorithm:
    """The learner ``config.algo.name`` names, for the groups of ``env``."""
    name = config.algo.name
    if name in DISCRETE_ALGOS:
        return QLearning(env, config, device)
    if name in CONTINUOUS_ALGOS:
        return DDPG(env, config, device)
    return PPO(env, config, device)


def build_env(config: Config, device: torch.device) -> BatchedEnv:
    """The batched env described by ``config.env``."""
    cfg = config.env
    env = make_env(cfg.task, num_envs=cfg.num_envs, kwargs=dict(cfg.kwargs), vector=cfg.vector,
                   num_workers=cfg.num_workers, groups=cfg.groups,
                   max_episode_steps=cfg.max_episode_steps,
                   include_state=config.algo.name in _STATE_ALGOS, action_repeat=cfg.action_repeat,
                   device=device)
    try:
        return wrap_env(env, frame_stack=cfg.frame_stack, pixel_norm=cfg.pixel_norm,
                        pixel_channels=cfg.pixel_channels, agent_centric=cfg.agent_centric)
    except ValueError as error:  # options that do not fit this task's observations
        env.close()
        raise ConfigError(f"env: {error}") from error


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device={name} but no CUDA device is available; use device=cpu or "
                          "device=auto")
    return torch.device(name)


def _run_dir(config: Config) -> Path:
    if config.run.dir is not None:
        run_dir = Path(config.run.dir)
        if (run_dir / "checkpoints").exists() and not config.run.resume:
            raise ConfigError(
                f"run directory {run_dir} already holds a run; pass run.resume=true to continue "
                "it, or choose another run.dir"
            )
    else:
        if config.run.resume:
            raise ConfigError("run.resume=true needs run.dir=<the run directory to continue>")
        name = re.sub(r"[^A-Za-z0-9_.-]+", "-", config.env.task)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        run_dir = Path("runs") / (f"{name}__{config.algo.name}__{config.groups.sharing}"
                                  f"__s{config.seed}__{stamp}")
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


def _seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _next_multiple(value: int, every: int) -> int:
    return (value // every + 1) * every


class _Checkpoints:
    """Writes and restores a run's checkpoints and, for off-policy runs, its replay buffer."""

    def __init__(self, run_dir: Path, config: Config, stream: TextIO) -> None:
        self.directory = run_dir / "checkpoints"
        self.replay_limit = config.train.replay_checkpoint_mb * 1e6
        self.warmup_steps = config.algo.warmup_steps
        self.stream = stream
        self.warned = False

    def save(self, algo: Algorithm, env_steps: int, wall_time: float) -> Path:
        state: dict[str, Any] = {
            "env_steps": env_steps,
            "wall_time": wall_time,
            "modules": {name: module.state_dict() for name, module in algo.modules().items()},
            "optimizer": algo.optimizer.state_dict(),
            "torch_rng": torch.get_rng_state(),
        }
        replay_step = None
        if isinstance(algo, OffPolicy):
            state["algo"] = algo.extra_state()
            if self._fits(algo):  # the buffer first: the checkpoint's buffer always exists
                checkpoint.save_replay(self.directory, env_steps, algo.replay.state_dict())
                replay_step = env_steps
        path = checkpoint.save(self.directory, env_steps, state)
        if isinstance(algo, OffPolicy):
            checkpoint.prune_replays(self.directory, replay_step)
        return path

    def _fits(self, algo: OffPolicy) -> bool:
        size = algo.replay.nbytes()
        if self.replay_limit == 0 or size <= self.replay_limit:
            return self.replay_limit > 0
        if not self.warned:
            self.stream.write(
                f"warning: the replay buffer holds {size / 1e6:,.0f} MB, over "
                f"train.replay_checkpoint_mb={self.replay_limit / 1e6:g}; checkpoints leave "
                f"it out, and a resumed run refills it for algo.warmup_steps="
                f"{self.warmup_steps:,} env steps. Raise train.replay_checkpoint_mb to keep "
                "it.\n")
            self.warned = True
        return False

    def restore(self, algo: Algorithm, device: torch.device) -> tuple[int, float]:
        """Load the newest checkpoint into ``algo``; return its env steps and wall time."""
        path = checkpoint.latest(self.directory)
        state = checkpoint.load(path, map_location=device)
        load_modules(algo, state, path)
        algo.optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["torch_rng"].cpu())
        env_steps = int(state["env_steps"])
        if isinstance(algo, OffPolicy):
            algo.load_extra_state(state["algo"])
            self._restore_replay(algo, path, env_steps, device)
        return env_steps, float(state["wall_time"])

    def _restore_replay(self, algo: OffPolicy, path: Path, env_steps: int,
                        device: torch.device) -> None:
        saved = checkpoint.load_replay(self.directory, env_steps, map_location=device)
        refill = f"it refills for algo.warmup_steps={self.warmup_steps:,} env steps"
        if saved is None:
            self.stream.write(f"warning: no replay buffer was saved with {path.name}; "
                              f"{refill}\n")
            return
        try:
            algo.replay.load_state_dict(saved)
        except ValueError as error:
            self.stream.write(f"warning: the replay buffer saved with {path.name} does not "
                              f"fit this run ({error}); {refill}\n")
            return
        self.stream.write(f"replay buffer restored: {algo.replay.num_transitions:,} "
                          "transitions\n")


def _evaluator(config: Config, device: torch.device) -> Evaluator | None:
    """Evaluation in env copies of its own (``train.eval_every > 0``), else None."""
    train_cfg = config.train
    if train_cfg.eval_every == 0:
        return None
    copies = min(train_cfg.eval_episodes, config.env.num_envs)
    eval_config = apply(config, {"env.num_envs": copies, "env.vector": "sync",
                                 "env.num_workers": None})
    with preserved_rng(device):  # building envs must not move the training RNG streams
        env = build_env(eval_config, device)
    return Evaluator(env, train_cfg.eval_episodes, config.seed + EVAL_SEED_OFFSET,
                     train_cfg.eval_mode)


def load_modules(algo: Algorithm, state: dict[str, Any], path: Path) -> None:
    """Load network and normaliser weights; a mismatch names the checkpoint and the cause."""
    for name, module in algo.modules().items():
        try:
            module.load_state_dict(state["modules"][name])
        except (KeyError, RuntimeError) as error:
            raise checkpoint.CheckpointError(
                f"checkpoint {path} does not fit this run's {name!r} (was it written with other "
                f"groups.sharing, groups.backend, groups.hidden or task?): {error}"
            ) from error
