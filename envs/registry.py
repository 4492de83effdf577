"""Task ids to PettingZoo ParallelEnvs, and :func:`make` for batched envs.

A task id is either

* ``"<family>/<name>"``: a task of one of :data:`marl_envs.families.FAMILIES`, e.g.
  ``"mpe2/simple_spread_v3"`` (``mpe2.simple_spread_v3.parallel_env(**kwargs)``),
  ``"sisl/multiwalker_v9"``, ``"classic/rps_v2"``, ``"toy/coop_match"``; or
* ``"<module.path>:<function>"``: any importable callable returning a ParallelEnv,
  called with the task kwargs.

Tasks of the ``torch`` family (``"torch/simple_spread_v3"``) are batched torch envs:
``make`` builds all copies as one set of tensors on ``device``; ``make_parallel_env``
returns a PettingZoo view of one copy.

``FAMILIES`` is the one place that says which code builds which task.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import torch
from marl_envs.core import BatchedEnv
from marl_envs.errors import (
    GroupingError,
    MissingDependencyError,
    NotAParallelEnvError,
    NotParallelizableError,
    TaskBuildError,
    TaskKwargsError,
    TaskOptionError,
    UnknownTaskError,
)
from marl_envs.families import FAMILIES, BatchedTaskTable, Constructor, Family
from marl_envs.layout import check_groups
from marl_envs.subproc import SubprocVectorEnv
from marl_envs.vector import SyncVectorEnv
from marl_envs.wrappers import ActionRepeat, TimeLimit
from pettingzoo import AECEnv, ParallelEnv

VECTOR_BACKENDS = ("sync", "subprocess")


@dataclass(frozen=True)
class TaskFactory:
    """A picklable zero-argument env constructor (what subprocess workers receive)."""

    task: str
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    max_episode_steps: int | None = None
    action_repeat: int = 1

    def __call__(self) -> ParallelEnv:
        return make_parallel_env(self.task, self.kwargs, self.max_episode_steps,
                                 self.action_repeat)


def make(
    task: str,
    num_envs: int = 1,
    kwargs: Mapping[str, Any] | None = None,
    vector: str = "sync",
    num_workers: int | None = None,
    groups: Mapping[str, Sequence[str]] | None = None,
    max_episode_steps: int | None = None,
    include_state: bool = True,
    action_repeat: int = 1,
    device: torch.device | str | None = None,
) -> BatchedEnv:
    """A batched env of ``num_envs`` copies of ``task``.

    Args:
        task: ``"family/name"`` or ``"module.path:function"`` (see module docstring).
        num_envs: number of copies ``E``.
        kwargs: keyword arguments of the task's constructor.
        vector: ``"sync"`` (one process) or ``"subprocess"`` (shared-memory workers).
        num_workers: worker processes for ``"subprocess"``; default ``min(E, cpus)``.
        groups: explicit grouping ``{group: [agent, ...]}``; default by name prefix.
        max_episode_steps: truncate episodes after this many steps (:class:`TimeLimit`).
        include_state: return ``env.state()`` as ``state``/``final_state`` when the task
            has it.
        action_repeat: repeat each decision for up to this many env steps
            (:class:`ActionRepeat`; 1 = off). The time limit counts env steps.
        device: where batched torch tasks (``torch/...``) keep their tensors (default
            CPU). PettingZoo tasks step on CPU whatever it says; the trainer moves their
            tensors.

    Raises:
        UnknownTaskError, MissingDependencyError, TaskKwargsError, TaskOptionError,
        TaskBuildError, NotAParallelEnvError, NotParallelizableError,
        UnsupportedSpaceError, GroupingError.
    """
    if vector not in VECTOR_BACKENDS:
        raise TaskOptionError(f"vector must be one of {VECTOR_BACKENDS}, got {vector!r}.")
    family = FAMILIES.get(task.partition("/")[0]) if ":" not in task else None
    if isinstance(family, BatchedTaskTable):
        if action_repeat != 1:
            raise TaskOptionError(f"task {task!r} is a batched torch task; action_repeat="
                             f"{action_repeat} is implemented for PettingZoo tasks only. Use "
                             "action_repeat=1 (env.action_repeat=1) or a PettingZoo task.")
        return _make_batched(task, family, num_envs, dict(kwargs or {}), vector, num_workers,
                             groups, max_episode_steps, include_state, device)
    if vector == "sync" and num_workers is not None:
        raise TaskOptionError("num_workers applies to vector='subprocess' only "
                              "(env.vector=subprocess); drop it (env.num_workers) or switch.")
    factory = TaskFactory(task, dict(kwargs or {}), max_episode_steps, action_repeat)
    if vector == "sync":
        return SyncVectorEnv(factory, num_envs, groups=groups, include_state=include_state)
    return SubprocVectorEnv(
        factory, num_envs, num_workers=num_workers, groups=groups, include_state=include_state
    )


_SET_BY_MAKE = ("num_envs", "device", "include_state")


def _make_batched(task: str, family: BatchedTaskTable, num_envs: int, kwargs: dict[str, Any],
                  vector: str, num_workers: int | None,
                  groups: Mapping[str, Sequence[str]] | None, max_episode_steps: int | None,
                  include_state: bool, device: torch.device | str | None) -> BatchedEnv:
    """Build a task that is a batched env itself, refusing options meant for PettingZoo."""
    _resolve(task)  # unknown names fail here, with suggestions
    build = family.tasks[task.partition("/")[2]]
    if vector != "sync" or num_workers is not None:
        raise TaskOptionError(f"task {task!r} steps every copy in one set of tensors in this "
                         "process; vector='subprocess' and num_workers do not apply. Use "
                         "vector='sync' (env.vector=sync) and leave num_workers unset.")
    if max_episode_steps is not None:
        raise TaskOptionError(f"task {task!r} sets its episode length itself; instead of "
                         f"max_episode_steps={max_episode_steps}, pass "
                         f"kwargs={{'max_cycles': {max_episode_steps}}} "
                         f"(env.kwargs.max_cycles={max_episode_steps}).")
    clashing = [key for key in _SET_BY_MAKE if key in kwargs]
    if clashing:
        raise TaskOptionError(f"task {task!r}: {clashing} are set by make()'s own arguments "
                         "(env.num_envs and device in a config); remove them from kwargs.")
    _check_kwargs(task, build, kwargs)
    try:
        env = build(num_envs=num_envs, device=device or "cpu", include_state=include_state,
                    **kwargs)
    except Exception as error:  # the task refused a kwarg's value
        raise TaskBuildError(_build_failure(task, kwargs, error)) from error
    if groups is not None:
        fixed = {name: list(spec.agents) for name, spec in env.groups.items()}
        if check_groups(groups, [a for spec in env.groups.values() for a in spec.agents]) != {
                name: tuple(agents) for name, agents in fixed.items()}:
            raise GroupingError(f"task {task!r} has fixed agent groups {fixed}; drop the "
                                "groups option (env.groups) or pass exactly these.")
    return env


def make_parallel_env(
    task: str,
    kwargs: Mapping[str, Any] | None = None,
    max_episode_steps: int | None = None,
    action_repeat: int = 1,
) -> ParallelEnv:
    """One PettingZoo ParallelEnv of ``task`` (unbatched), optionally time-limited, then
    with repeated actions (``action_repeat > 1``)."""
    kwargs = dict(kwargs or {})
    constructor, signature_source = _resolve(task)
    _check_kwargs(task, signature_source, kwargs)
    try:
        env = constructor(**kwargs)
    except _OWN_ERRORS:
        raise
    except ImportError as error:
        raise MissingDependencyError(f"task {task!r} could not be built: {error}") from error
    except TypeError as error:
        if "unexpected keyword argument" in str(error):
            raise TaskKwargsError(f"task {task!r} rejected its kwargs {kwargs}: {error}") from error
        raise TaskBuildError(_build_failure(task, kwargs, error)) from error
    except Exception as error:  # the task's own code refused its kwargs or failed
        raise TaskBuildError(_build_failure(task, kwargs, error)) from error
    _check_is_parallel_env(task, env)
    if max_episode_steps is not None:
        env = TimeLimit(env, max_episode_steps)
    return env if action_repeat == 1 else ActionRepeat(env, action_repeat)


# Errors raised on purpose while building a task; they already say what to do.
_OWN_ERRORS = (MissingDependencyError, NotParallelizableError, TaskKwargsError,
               TaskOptionError, UnknownTaskError)


def _build_failure(task: str, kwargs: Mapping[str, Any], error: BaseException) -> str:
    """One line on why building ``task`` failed, and how to see the full story."""
    reason = " ".join(str(error).split()).rstrip(".") or "(no message)"
    how = (f"call {task.replace(':', '.')}(**{dict(kwargs)}) in Python to see the traceback"
           if ":" in task else "check the task's kwargs (env.kwargs)")
    return (f"task {task!r} failed to build with kwargs {dict(kwargs)}: "
            f"{type(error).__name__}: {reason}; {how}")


def list_families(installed_only: bool = False) -> list[str]:
    """Family names, in :data:`FAMILIES` order; optionally only those importable here."""
    return [name for name, family in FAMILIES.items() if family.installed() or not installed_only]


def list_tasks(family: str | None = None) -> list[str]:
    """Task ids (``family/name``) of one family or of every installed family.

    A listed task may still need extras to build (``make`` then says which).
    """
    names = [family] if family is not None else list_families(installed_only=True)
    tasks: list[str] = []
    for name in names:
        tasks += [f"{name}/{task}" for task in _family(name, name).task_names()]
    return tasks


def _resolve(task: str) -> Constructor:
    if ":" in task:
        function = _import_callable(task)
        return function, function
    family_name, slash, name = task.partition("/")
    if not slash or not name:
        raise UnknownTaskError(
            f"task id {task!r} must look like 'family/name' (e.g. 'mpe2/simple_spread_v3') "
            f"or 'module.path:function'; families: {list_families()}."
        )
    family = _family(family_name, task)
    names = family.task_names()
    if name not in names:
        close = _closest(name, names, n=3, cutoff=0.6)
        hint = f" Did you mean {[f'{family_name}/{match}' for match in close]}?" if close else ""
        raise UnknownTaskError(
            f"unknown task {task!r}: family {family_name!r} has no task {name!r}.{hint} "
            f"Tasks of {family_name!r}: {names}."
        )
    return family.constructor(task, name)


def _family(family_name: str, task: str) -> Family:
    family = FAMILIES.get(family_name)
    if family is None:
        close = _closest(family_name, list(FAMILIES), n=2, cutoff=0.6)
        hint = f" Did you mean {close}?" if close else ""
        installed = list_families(installed_only=True)
        missing = [name for name in FAMILIES if name not in installed]
        raise UnknownTaskError(
            f"unknown task family {family_name!r} in {task!r}.{hint} Installed families: "
            f"{installed}; not installed: {missing}. For your own env, pass "
            "'module.path:function'."
        )
    if not family.installed():
        raise MissingDependencyError(
            f"task family {family_name!r} is not installed (needed by {task!r}). "
            f"Install it with: {family.install}"
        )
    return family


def _import_callable(task: str) -> Callable[..., Any]:
    module_name, _, attribute_path = task.partition(":")
    if not module_name or not attribute_path:
        raise UnknownTaskError(f"task id {task!r} must look like 'module.path:function' (e.g. "
                               "'my_package.my_envs:make_env'), with both parts non-empty.")
    try:
        module: ModuleType = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name is not None and module_name.startswith(error.name):
            raise UnknownTaskError(
                f"task {task!r}: cannot import module {module_name!r} ({error}). Check the "
                "module path and that its package is installed or on sys.path."
            ) from error
        raise MissingDependencyError(
            f"task {task!r}: module {module_name!r} needs {error.name!r}, which is not installed."
        ) from error
    except Exception as error:  # a syntax error or an exception in the module's own code
        reason = " ".join(str(error).split()) or "(no message)"
        raise TaskBuildError(
            f"task {task!r}: importing module {module_name!r} failed: {type(error).__name__}: "
            f"{reason}; run `python -c 'import {module_name}'` to see the traceback") from error
    target: Any = module
    for part in attribute_path.split("."):
        if not hasattr(target, part):
            public = [name for name in dir(target) if not name.startswith("_")]
            close = _closest(part, public, n=3, cutoff=0.6)
            hint = f" Did you mean {close}?" if close else ""
            raise UnknownTaskError(f"task {task!r}: {target!r} has no attribute {part!r}.{hint}")
        target = getattr(target, part)
    if not callable(target):
        raise UnknownTaskError(f"task {task!r}: {attribute_path!r} is not callable.")
    return target


def _check_kwargs(task: str, signature_source: Any, kwargs: Mapping[str, Any]) -> None:
    """Reject kwargs the constructor's signature does not name (before building)."""
    try:
        parameters = inspect.signature(signature_source).parameters
    except (TypeError, ValueError):
        return
    if any(parameter.kind is inspect.Parameter.VAR_KEYWORD for parameter in parameters.values()):
        return
    keyword_kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    accepted = [name for name, parameter in parameters.items() if parameter.kind in keyword_kinds]
    for key in kwargs:
        if key not in accepted:
            close = _closest(key, accepted, n=1, cutoff=0.5)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise TaskKwargsError(
                f"task {task!r} does not accept the keyword argument {key!r}.{hint} "
                f"Accepted: {accepted}."
            )


def _closest(name: str, candidates: Sequence[str], n: int, cutoff: float) -> list[str]:
    """The candidates most similar to ``name``, ignoring case (``n`` finds ``N``)."""
    by_lower = {candidate.lower(): candidate for candidate in candidates}
    matches = difflib.get_close_matches(name.lower(), list(by_lower), n=n, cutoff=cutoff)
    return [by_lower[match] for match in matches]


def _check_is_parallel_env(task: str, env: Any) -> None:
    if isinstance(env, AECEnv):
        raise NotAParallelEnvError(
            f"task {task!r} returned an AEC env ({env}); expected a ParallelEnv. Wrap it "
            "with pettingzoo.utils.conversions.aec_to_parallel (or "
            "turn_based_aec_to_parallel for turn-based games) in your function."
        )
    if not all(hasattr(env, name) for name in ("possible_agents", "reset", "step")):
        shown = " ".join(repr(env).split())
        shown = shown if len(shown) <= 60 else shown[:57] + "..."
        raise NotAParallelEnvError(
            f"task {task!r} returned {type(env).__name__} ({shown}); expected a PettingZoo "
            "ParallelEnv (with possible_agents, reset and step). Return one from the function, "
            "e.g. `return my_module.parallel_env()`."
        )
