"""Errors raised by ``marl_envs``.

Each one subclasses the built-in exception a caller would catch for the same mistake
(``ValueError`` for a bad value, ``TypeError`` for a bad type, ``ImportError`` for a
missing package), so ``except ValueError`` keeps working.
"""

from __future__ import annotations


class UnknownTaskError(ValueError):
    """The task id names no family, task or callable that can be found."""


class MissingDependencyError(ImportError):
    """The task exists but a package it needs is not installed."""


class TaskKwargsError(TypeError):
    """The task's constructor does not accept a keyword argument that was given."""


class TaskOptionError(ValueError):
    """An option of ``make`` (vector backend, workers, time limit...) this task cannot take."""


class TaskBuildError(RuntimeError):
    """The task's constructor (or the import of its module) raised an error of its own."""


class NotAParallelEnvError(TypeError):
    """The task's constructor returned something that is not a PettingZoo ParallelEnv."""


class NotParallelizableError(ValueError):
    """The task only exists as a turn-based AEC env and cannot be stepped in parallel."""


class UnsupportedSpaceError(TypeError):
    """An agent's observation or action space cannot be batched as a tensor."""


class GroupingError(ValueError):
    """The agent groups are not a partition of the agents, or mix incompatible agents."""


class ActionError(ValueError):
    """The actions given to ``step`` do not match the groups' action spaces."""


class WorkerError(RuntimeError):
    """A subprocess worker failed or exited; the message carries its traceback."""
