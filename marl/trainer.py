"""The training loop: collect, update, evaluate, log, checkpoint, repeat.

:func:`train` builds the run's parts (:mod:`marl.build`: device, env, learner, evaluator,
checkpoints), then :class:`_Loop` iterates. The learner is known only through the
contract :class:`marl.algos.base.Learner`: ``collect`` steps the batched env into the
learner's storage (a PPO rollout, an off-policy replay buffer), ``update`` learns from it.
Evaluation runs in env copies of its own (:mod:`marl.play`); checkpoints
(:class:`marl.build.Checkpoints`) carry the learner's modules, optimiser, extra state and
replay buffer; SIGINT / SIGTERM stop the run after writing a checkpoint
(:mod:`marl.stopping`).
"""

from __future__ import annotations

import dataclasses
import random
import re
import signal
import sys
import time
from pathlib import Path
from typing import TextIO, cast

import numpy as np
import torch
from marl_envs.core import BatchedEnv
from torch.nn.utils import parametrize

from marl import checkpoint
from marl.algos.base import Learner, NonFiniteLossError
from marl.algos.compiled import compile_note, compile_seconds
from marl.build import Checkpoints, build_env, make_evaluator, make_learner, resolve_device
from marl.config import Config, ConfigError, dump, flatten, to_dict
from marl.group_nets import encoder_note
from marl.host import configure_process
from marl.logging import EpisodeTracker, MetricsWriter
from marl.play import Evaluator
from marl.selective.runtime import (
    SelectiveSharing,
    TransitionRecorder,
    check_clusters,
    selective_groups,
)
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
    configure_process(config)
    device = resolve_device(config.device)
    env = build_env(config, device)
    chosen = selective_groups(config, list(env.groups))
    recorder = None
    try:
        if chosen:
            check_clusters(config, env)
            recorder = TransitionRecorder(env, chosen)
            env = cast(BatchedEnv, recorder)
        algo = make_learner(env, config, device)
        evaluator = make_evaluator(config, device)
    except BaseException:
        env.close()  # subprocess workers would outlive the error
        raise
    # Only now: a config the learner refuses leaves no empty run directory behind.
    run_dir.mkdir(parents=True, exist_ok=True)
    tracker = EpisodeTracker({n: s.num_agents for n, s in env.groups.items()}, env.num_envs,
                             device)
    writer = MetricsWriter(run_dir, config.run.tensorboard, config.train.progress,
                           config.train.total_env_steps, stream)
    saver = Checkpoints(run_dir, config, stream)
    selective = SelectiveSharing(config, recorder, run_dir, stream) if recorder else None
    env_steps, wall_offset = 0, 0.0
    if config.run.resume and checkpoint.list_checkpoints(saver.directory):
        env_steps, wall_offset = saver.restore(algo, device)
        writer.truncate_after(env_steps)
        algo.reset_env(seed=config.seed + env_steps)
        stream.write(f"resuming {run_dir} from env step {env_steps:,}\n")
    if selective is not None:
        selective.start(algo.modules(), algo.optimizer)
    note = compile_note(algo)
    dump(config, run_dir / "config.yaml", notes=[encoder_note(env, config), note])
    if config.train.progress and config.train.compile is not False:
        stream.write(f"{note}\n")
    writer.hparams(flatten(to_dict(config)))
    loop = _Loop(config, algo, tracker, writer, saver, evaluator, env_steps, wall_offset,
                 selective)
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

    def __init__(self, config: Config, algo: Learner, tracker: EpisodeTracker,
                 writer: MetricsWriter, saver: Checkpoints, evaluator: Evaluator | None,
                 env_steps: int, wall_offset: float,
                 selective: SelectiveSharing | None = None) -> None:
        self.config, self.algo, self.tracker = config, algo, tracker
        self.selective = selective
        self.writer, self.saver, self.evaluator = writer, saver, evaluator
        self.env_steps, self.wall_offset = env_steps, wall_offset
        self.start = self.last_time = time.perf_counter()
        self.last_steps, self.eval_seconds = env_steps, 0.0
        self.compile_time = 0.0  # first calls of compiled graphs: reported, not in sps

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
            # Collecting never changes the weights: selective networks gather theirs once.
            compiling = compile_seconds()
            with parametrize.cached():
                self.env_steps += algo.collect(self.tracker)
            losses = self._update(progress)
            compiled = compile_seconds() - compiling
            if compiled:
                self.compile_time += compiled
                self.eval_seconds += compiled  # left out of the steps per second
                if self.config.train.progress:
                    self.writer.stream.write(f"compiled in {compiled:.1f} s\n")
            if self.selective is not None:  # after the warm-up: K networks from now on
                self.selective.after_iteration(self.env_steps, algo.modules(), algo.optimizer,
                                               self.writer)
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
        with parametrize.cached():
            results = self.evaluator(self.algo)
        self.eval_seconds += results["eval_time"]  # left out of the steps per second
        return results

    def _metrics(self, losses: dict[str, float] | None,
                 results: dict[str, float] | None) -> dict[str, float]:
        """One metrics line: training statistics when ``losses`` are given (a log step),
        and the evaluation's ``results``. An evaluation between log steps gets a line of
        its own, so the training windows are the same with evaluation on or off."""
        metrics: dict[str, float] = {"env_steps": self.env_steps, "wall_time": self._wall_time()}
        if self.compile_time:
            metrics["compile_time"] = self.compile_time
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
    return run_dir


def _seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _next_multiple(value: int, every: int) -> int:
    return (value // every + 1) * every
