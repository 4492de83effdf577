"""The ``marl`` command: ``marl train | eval | sweep | report | bench``."""

from __future__ import annotations

import argparse
import json
import math
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from marl.config import HPSETS, ConfigError, help_text, load, parse_overrides

_TRAIN_EPILOG = """\
Examples:
  marl train                                         IPPO, shared parameters, simple_spread_v3
  marl train groups.sharing=independent seed=2
  marl train algo.name=mappo env.task=mpe2/simple_speaker_listener_v4
  marl train hpset=qmix_mpe                          QMIX on simple_spread_v3 (discrete)
  marl train hpset=matd3_mpe                         MATD3 on simple_spread_v3 (continuous)
  marl train env.kwargs.N=5 env.kwargs.continuous_actions=true
  marl train --config runs/X/config.yaml run.dir=runs/X run.resume=true

Config keys (set them as key=value; dotted keys address sections):
"""


def _at_least(kind: type[int] | type[float], low: float, noun: str
              ) -> Callable[[str], int | float]:
    """An argparse type: a finite ``kind`` of at least ``low``, refused in one line."""

    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or not math.isfinite(value) or value < low:
            raise argparse.ArgumentTypeError(f"expected {noun} >= {low}, got {text!r}")
        return value

    parse.__name__ = kind.__name__
    return parse


_COUNT = _at_least(int, 1, "an integer")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="marl", description="Multi-agent RL with shared or independent parameters.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Commands:\n  marl train [--config FILE.yaml] [key=value ...]\n"
               "  marl eval RUN_DIR [--episodes N] [--greedy] [--override KEY=VALUE] [--random]\n"
               "  marl sweep SWEEP.yaml [--dry-run] [--out RUNS_DIR] [--executor local|ray]\n"
               "  marl report RUNS_DIR [--out DIR] [--metric episode_return]\n"
               "  marl bench NAME [--quick] [--out DIR] [...]    (NAME: "
               + ", ".join(benchmark_names() or ["none found"]) + ")\n\n"
               "Config keys (for marl train):\n"
               + help_text(),
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    train = commands.add_parser(
        "train",
        help="train agents (IPPO, MAPPO, IQL, VDN, QMIX, MADDPG, MATD3) on a PettingZoo task",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=_TRAIN_EPILOG + help_text() + f"\n\nNamed hyperparameter sets (hpset=NAME): "
        f"{', '.join(sorted(HPSETS))}",
    )
    train.add_argument("--config", type=Path, help="a YAML config file (e.g. a run's config.yaml)")
    train.add_argument("overrides", nargs="*", metavar="key=value",
                       help="config overrides, applied after --config")
    _add_eval_parser(commands)
    _add_sweep_parser(commands)
    _add_report_parser(commands)
    _add_bench_parser(commands)
    return parser


_EVAL_EPILOG = """\
Examples:
  marl eval runs/X --episodes 100
  marl eval runs/X --override env.kwargs.N=5          the same policy with 5 agents
  marl eval runs/X --random --override env.kwargs.N=5 uniform random play in that env

--override KEY=VALUE (repeatable) changes the env the checkpoint plays in: env.kwargs.KEY
and env.max_episode_steps only, since the networks and normalisers come from the
checkpoint. A policy plays another number of agents when none of its shapes depends on
it: train it with groups.encoder=entity groups.entity_layout=mpe_spread
groups.agent_id=false algo.obs_norm=false (shared networks); otherwise marl eval names
the tensors that changed and the keys that cause it.
"""


def _add_eval_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    evaluate = commands.add_parser(
        "eval", help="evaluate a run's latest checkpoint; prints JSON",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=_EVAL_EPILOG,
        description="Load the latest checkpoint of RUN_DIR, play episodes and print the mean "
                    "per-agent episode return with a 95%% bootstrap confidence interval as JSON.",
    )
    evaluate.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    evaluate.add_argument("--episodes", type=int, default=20, help="episodes to play (20)")
    evaluate.add_argument("--greedy", action="store_true",
                          help="take the most likely action instead of sampling")
    evaluate.add_argument("--seed", type=int, default=12345, help="env seed (12345)")
    evaluate.add_argument("--device", default=None, help="cpu or cuda (default: the run's)")
    evaluate.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                          help="set an env key of the run's config (env.kwargs.KEY, "
                               "env.max_episode_steps); repeatable")
    evaluate.add_argument("--random", action="store_true",
                          help="play uniform random actions instead of the checkpoint "
                               "(the reference; needs no checkpoint)")


_SWEEP_EPILOG = """\
A sweep file is a YAML list of blocks; list values form a grid, `repeat: K` gives K seeds,
`hpset: NAME` starts from a named set of defaults and `config: FILE.yaml` from a config file
(read from the sweep file's folder); block keys win over both:

  - hpset: ippo_mpe
    groups.sharing: [shared, independent]
    optim.lr: [0.0003, 0.001]
    repeat: 3                      # 2 x 2 x 3 = 12 runs

Every run is a job file in RUNS_DIR/jobs pinned to the git revision (HEAD, or --rev) and runs
in a clean checkout of it; runs go to RUNS_DIR/<descriptor>/seed_<k>. Launching the same sweep
again skips finished runs and runs failed or interrupted ones again. Relative paths are read
from the current directory. Exit code: 0 when every run is done, 1 when some failed, 130 on
Ctrl-C.
"""


def _add_sweep_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    sweep = commands.add_parser(
        "sweep", help="run a grid of experiments pinned to a git revision",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=_SWEEP_EPILOG)
    sweep.add_argument("sweep_file", type=Path, metavar="SWEEP.yaml")
    sweep.add_argument("--dry-run", action="store_true",
                       help="print the runs and their count, start nothing")
    sweep.add_argument("--out", type=Path, default=None,
                       help="runs directory (default: runs/<sweep file name>)")
    sweep.add_argument("--executor", choices=("local", "ray"), default="local",
                       help="local worker processes (default) or Ray tasks")
    sweep.add_argument("--workers", type=_COUNT, default=None,
                       help="local: jobs at once (default: cores // torch_threads, or "
                            "GPUs x --jobs-per-gpu)")
    sweep.add_argument("--jobs-per-gpu", type=_COUNT, default=1,
                       help="local: jobs sharing a GPU")
    sweep.add_argument("--allow-dirty", action="store_true",
                       help="run uncommitted changes: record them (tracked files and new "
                            "files git does not ignore) as a diff with each job and apply it "
                            "to the checkout")
    sweep.add_argument("--rev", default=None, help="run this commit instead of HEAD")
    sweep.add_argument("--repo", type=Path, default=None,
                       help="the git repository whose code the runs use (default: the one "
                            "holding the current directory)")
    sweep.add_argument("--ray-address", default=None,
                       help="ray: cluster address (default: start a local Ray)")
    sweep.add_argument("--cpus-per-job", type=_at_least(float, 0.0, "a number"), default=None,
                       help="ray: CPUs per job (default: the job's torch_threads)")
    sweep.add_argument("--gpus-per-job", type=_at_least(float, 0.0, "a number"), default=0.0,
                       help="ray: GPUs per job")


def _add_report_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    report = commands.add_parser(
        "report", help="tables, learning curves and marl-eval JSON from a runs directory",
        description="Group the runs under RUNS_DIR by descriptor and write report.md (final and "
                    "best return: mean, IQM, 95%% stratified bootstrap CIs, seeds), learning "
                    "curves (PNG) and marl_eval.json; print the table.")
    report.add_argument("runs_dir", type=Path, metavar="RUNS_DIR")
    report.add_argument("--out", type=Path, default=None, help="default: RUNS_DIR/report")
    report.add_argument("--metric", default="episode_return",
                        help="a key of metrics.jsonl (episode_return)")
    report.add_argument("--x", action="append", choices=("env_steps", "wall_time"), default=None,
                        help="x axis of the curves; repeat for both (default: both)")
    report.add_argument("--final-points", type=int, default=1,
                        help="'final' is the mean of each run's last N logged values (1)")
    report.add_argument("--at", type=int, action="append", default=None, metavar="STEPS",
                        help="also tabulate every group at this many env steps (repeatable)")


def _add_bench_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    bench = commands.add_parser(
        "bench", help="run a benchmark of benchmarks/ (python -m benchmarks.NAME)",
        description="Run one benchmark in benchmarks/ of this source checkout; the arguments "
                    "after NAME go to it (see `marl bench NAME --help`). Each writes "
                    "results.json, results.md and PNG plots into --out.")
    bench.add_argument("name", metavar="NAME", help=", ".join(benchmark_names()))
    bench.add_argument("args", nargs=argparse.REMAINDER, help="the benchmark's own arguments")


def _source_root() -> Path:
    return Path(__file__).resolve().parents[1]


def benchmark_names() -> list[str]:
    """The benchmarks next to this package (a source checkout or an editable install)."""
    folder = _source_root() / "benchmarks"
    return sorted(p.stem for p in folder.glob("*.py")
                  if not p.stem.startswith("_") and p.stem != "common"
                  and "def main(" in p.read_text())


def _bench(args: argparse.Namespace) -> int:
    import os
    import subprocess

    names = benchmark_names()
    if not names:
        raise FileNotFoundError(
            f"no benchmarks/ folder next to the marl package ({_source_root()}); benchmarks "
            "ship with the source: clone the repository and `pip install -e .` there")
    if args.name not in names:
        raise ConfigError(f"unknown benchmark {args.name!r}; available: {', '.join(names)}")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(_source_root()), env.get("PYTHONPATH")]))
    # `python -m` would put the current directory first on sys.path, where another
    # checkout's (or any) `benchmarks` or `marl` folder would shadow this one's.
    env["PYTHONSAFEPATH"] = "1"
    command = [sys.executable, "-m", f"benchmarks.{args.name}", *args.args]
    return subprocess.run(command, env=env, check=False).returncode


def main(argv: Sequence[str] | None = None) -> int:
    """Run one ``marl`` command; a user error prints one line and returns non-zero."""
    args = _parser().parse_args(argv)
    try:
        return _command(args)
    except KeyboardInterrupt:
        print(f"marl {args.command}: interrupted", file=sys.stderr)
        return 130
    except ConfigError as error:
        _report_error(args.command, f"error: {error}")
        return 2
    except OSError as error:  # a path the user gave that cannot be read or written
        _report_error(args.command, f"error: {_os_error_text(error)}")
        return 2 if isinstance(error, FileNotFoundError) else 1
    except Exception as error:
        # Errors of our own carry a message meant for the user; show it without a traceback.
        if type(error).__module__.startswith(("marl", "marl_envs")):
            _report_error(args.command, f"{type(error).__name__}: {error}")
            return 1
        raise


_MAX_MESSAGE = 600


def _report_error(command: str, message: str) -> None:
    """Print ``message`` as one line (some carry a library's multi-line detail)."""
    line = " ".join(message.split())
    if len(line) > _MAX_MESSAGE:
        line = line[:_MAX_MESSAGE - 3] + "..."
    print(f"marl {command}: {line}", file=sys.stderr)


def _command(args: argparse.Namespace) -> int:
    if args.command == "train":
        return _train(args)
    if args.command == "eval":
        from marl.evaluate import eval_overrides, evaluate

        result = evaluate(args.run_dir, episodes=args.episodes, greedy=args.greedy,
                          seed=args.seed, device=args.device,
                          overrides=eval_overrides(args.override), random_play=args.random)
        try:
            print(json.dumps(result, indent=2))
        except BrokenPipeError:  # `marl eval ... | head` closed the pipe early
            sys.stderr.close()
        return 0
    if args.command == "sweep":
        return _sweep(args)
    if args.command == "report":
        return _report(args)
    if args.command == "bench":
        return _bench(args)
    return 2


def _os_error_text(error: OSError) -> str:
    """``Permission denied: runs/x`` rather than ``[Errno 13] Permission denied: 'runs/x'``."""
    if error.filename is None or not error.strerror:
        return str(error)
    target = f" -> {error.filename2}" if error.filename2 is not None else ""
    return f"{error.strerror}: {error.filename}{target}"


def _train(args: argparse.Namespace) -> int:
    from marl.stopping import TrainingInterrupted
    from marl.trainer import train

    overrides = parse_overrides(args.overrides)
    config = load(args.config, overrides)
    saved = Path(config.run.dir or "") / "config.yaml"
    if config.run.resume and args.config is None and saved.is_file():
        # Resuming continues the run as it was configured; overrides still apply on top.
        config = load(saved, overrides)
    try:
        train(config)
    except TrainingInterrupted as stop:  # SIGINT / SIGTERM; train() printed how to resume
        return stop.exit_code
    except KeyboardInterrupt:  # Ctrl-C before the loop (and its signal handlers) started
        print("marl train: interrupted before training started", file=sys.stderr)
        return 128 + signal.SIGINT
    return 0


def _stop_cleanly_on_signals() -> None:
    """Ctrl-C and SIGTERM stop a sweep cleanly (jobs marked interrupted, re-run next launch).

    A process started in the background by a non-interactive shell inherits SIGINT as
    ignored; a sweep promises a clean stop, so it takes the signals back explicitly.
    """

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, interrupt)


def _sweep(args: argparse.Namespace) -> int:
    from marl.experiments import executors, runner

    # Jobs run in a checkout elsewhere (and on Ray, in a worker's directory): every path
    # is made absolute here, against the directory the sweep is launched from.
    sweep_file = args.sweep_file.resolve()
    out = (args.out or Path("runs") / sweep_file.stem).resolve()
    repo = (args.repo or Path.cwd()).resolve()
    plan = runner.plan(sweep_file, out, repo, args.rev, args.allow_dirty)
    for job in plan.jobs:
        print(f"{'skip (done)' if job.status == 'done' else 'run':<12} {job.name}")
    print(f"{len(plan.jobs)} runs ({len(plan.to_run)} to run) at revision {plan.revision[:7]}"
          + (" with uncommitted changes" if plan.jobs and plan.jobs[0].diff else ""))
    if args.dry_run or not plan.to_run:
        return 0
    _stop_cleanly_on_signals()
    executor: executors.LocalExecutor | executors.RayExecutor
    if args.executor == "ray":
        executor = executors.RayExecutor(args.ray_address, args.cpus_per_job, args.gpus_per_job)
    else:
        gpus = executors.visible_gpus()
        threads = max(executors.job_threads(job) for job in plan.to_run)
        workers = args.workers or executors.default_workers(threads, gpus, args.jobs_per_gpu)
        executor = executors.LocalExecutor(workers, gpus, args.jobs_per_gpu)
    try:
        with runner.exclusive(out):
            runner.enqueue(out, plan.to_run)
            executor.run(out, plan.to_run)
    except KeyboardInterrupt:
        print(runner.summary(plan.jobs, out), file=sys.stderr)
        print("interrupted: launch the same sweep again to finish it", file=sys.stderr)
        return 130
    print(runner.summary(plan.jobs, out))
    failures = runner.failure_line(plan.jobs)
    if failures:
        print(f"marl sweep: {failures}", file=sys.stderr)
    return 0 if all(job.status == "done" for job in plan.jobs) else 1


def _report(args: argparse.Namespace) -> int:
    from marl.experiments.report import write_report

    table = write_report(args.runs_dir, args.out or args.runs_dir / "report", args.metric,
                         tuple(args.x or ("env_steps", "wall_time")), args.final_points,
                         tuple(args.at or ()))
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
