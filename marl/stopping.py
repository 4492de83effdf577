"""Stops on SIGINT (Ctrl-C) and SIGTERM that lose nothing.

While :class:`StopSignals` is active, the first signal only asks the training loop to stop
at its next safe point: after the current iteration's collect and update, with a
checkpoint written at that env step. A second signal quits at once; every file is
written atomically (:mod:`marl.checkpoint`), so what was complete before stays complete.
"""

from __future__ import annotations

import shlex
import signal
import threading
from pathlib import Path
from typing import Any

from marl import checkpoint


class TrainingInterrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM stopped the run; the message says where to resume from.

    Attributes:
        signum: the signal that stopped the run.
        checkpoint: the newest complete checkpoint (None if the run never wrote one).
        exit_code: ``128 + signum``, what a process killed by the signal would return.
    """

    def __init__(self, message: str, signum: int, checkpoint: Path | None) -> None:
        super().__init__(message)
        self.signum = signum
        self.checkpoint = checkpoint
        self.exit_code = 128 + signum


class StopSignals:
    """While active, SIGINT (Ctrl-C) and SIGTERM ask the loop to stop at its next safe point.

    The first signal only sets :attr:`signum`; the loop finishes its collect and update,
    writes a checkpoint and stops. A second one raises :class:`KeyboardInterrupt` at once:
    every file is written atomically, so quitting mid-save leaves the previous checkpoint
    intact. Signal handlers exist only in the main thread; elsewhere this does nothing.
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc_info: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: object) -> None:
        if self.signum is not None:
            raise KeyboardInterrupt(f"second {signal.Signals(signum).name}")
        self.signum = signum


def interrupted(run_dir: Path, directory: Path, signum: int, env_steps: int,
                saved: bool) -> TrainingInterrupted:
    """The exception (and message) for a stop by ``signum`` at ``env_steps``.

    ``saved``: the stop wrote its checkpoint; else a second signal cut the stop short and
    the newest complete checkpoint in ``directory`` is where to resume from.
    """
    name = signal.Signals(signum).name
    found = checkpoint.list_checkpoints(directory)
    newest = found[-1] if found else None
    resume = f"marl train run.dir={shlex.quote(str(run_dir.resolve()))} run.resume=true"
    if newest is None:
        text = f"{name}: stopped at env step {env_steps:,}, before any checkpoint was written"
    elif saved:
        text = (f"{name}: stopped at env step {env_steps:,}; checkpoint written to {newest}\n"
                f"resume with:  {resume}")
    else:
        text = (f"{name} again: stopped at once; the newest complete checkpoint is {newest}\n"
                f"resume with:  {resume}")
    return TrainingInterrupted(text, signum, newest)
