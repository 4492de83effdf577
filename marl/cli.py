"""The ``marl`` command: ``marl train``, ``marl eval``."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from marl.config import HPSETS, ConfigError, help_text, load, parse_overrides

_TRAIN_EPILOG = """\
Examples:
  marl train                                         IPPO, shared parameters, simple_spread_v3
  marl train groups.sharing=independent seed=2
  marl train algo.name=mappo env.task=mpe2/simple_speaker_listener_v4
  marl train env.kwargs.N=5 env.kwargs.continuous_actions=true
  marl train --config runs/X/config.yaml run.dir=runs/X run.resume=true

Config keys (set them as key=value; dotted keys address sections):
"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="marl", description="Multi-agent RL with shared or independent parameters.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Commands:\n  marl train [--config FILE.yaml] [key=value ...]\n"
               "  marl eval RUN_DIR [--episodes N] [--greedy]\n\nConfig keys (for marl train):\n"
               + help_text(),
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    train = commands.add_parser(
        "train", help="train agents (IPPO/MAPPO) on a PettingZoo task",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=_TRAIN_EPILOG + help_text() + f"\n\nNamed hyperparameter sets (hpset=NAME): "
        f"{', '.join(sorted(HPSETS))}",
    )
    train.add_argument("--config", type=Path, help="a YAML config file (e.g. a run's config.yaml)")
    train.add_argument("overrides", nargs="*", metavar="key=value",
                       help="config overrides, applied after --config")
    evaluate = commands.add_parser(
        "eval", help="evaluate a run's latest checkpoint; prints JSON",
        description="Load the latest checkpoint of RUN_DIR, play episodes and print the mean "
                    "per-agent episode return with a 95%% bootstrap confidence interval as JSON.",
    )
    evaluate.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    evaluate.add_argument("--episodes", type=int, default=20, help="episodes to play (20)")
    evaluate.add_argument("--greedy", action="store_true",
                          help="take the most likely action instead of sampling")
    evaluate.add_argument("--seed", type=int, default=12345, help="env seed (12345)")
    evaluate.add_argument("--device", default=None, help="cpu or cuda (default: the run's)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "train":
            return _train(args)
        if args.command == "eval":
            from marl.evaluate import evaluate

            result = evaluate(args.run_dir, episodes=args.episodes, greedy=args.greedy,
                              seed=args.seed, device=args.device)
            try:
                print(json.dumps(result, indent=2))
            except BrokenPipeError:  # `marl eval ... | head` closed the pipe early
                sys.stderr.close()
            return 0
    except (ConfigError, FileNotFoundError) as error:
        print(f"marl {args.command}: error: {error}", file=sys.stderr)
        return 2
    except Exception as error:
        # Errors of our own carry a message meant for the user; show it without a traceback.
        if type(error).__module__.startswith(("marl", "marl_envs")):
            print(f"marl {args.command}: {type(error).__name__}: {error}", file=sys.stderr)
            return 1
        raise
    return 2


def _train(args: argparse.Namespace) -> int:
    from marl.trainer import train

    overrides = parse_overrides(args.overrides)
    config = load(args.config, overrides)
    saved = Path(config.run.dir or "") / "config.yaml"
    if config.run.resume and args.config is None and saved.is_file():
        # Resuming continues the run as it was configured; overrides still apply on top.
        config = load(saved, overrides)
    train(config)
    return 0


if __name__ == "__main__":
    sys.exit(main())
