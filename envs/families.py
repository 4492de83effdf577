"""Which code builds which task: :data:`FAMILIES`, the one table from family to builder.

A family answers three questions: is it installed, which task names does it have, and
which callable builds a named task from keyword arguments. Three kinds exist:

* :class:`ModuleFamily`: one module per task, ``<package>.<name>.parallel_env`` (MPE2).
* :class:`PettingZooFamily`: PettingZoo's own registry (``sisl``, ``butterfly``,
  ``classic``, ``atari``; PettingZoo >= 1.27, older versions fall back to modules).
* :class:`TaskTable`: our own tasks, a plain dict from name to ParallelEnv class.
* :class:`BatchedTaskTable`: our own tasks that are batched torch envs themselves
  (``torch/simple_spread_v3``); ``make`` builds them directly, without PettingZoo.
"""

from __future__ import annotations

import importlib
import importlib.util
import pkgutil
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

import pettingzoo
from marl_envs.core import BatchedEnv
from marl_envs.errors import MissingDependencyError, NotParallelizableError, UnknownTaskError
from marl_envs.tasks import (
    CoopMatchEnv,
    EndlessEnv,
    GridNavEnv,
    HiddenRolesEnv,
    LeaveEarlyEnv,
    MatrixGameEnv,
    MemoryEnv,
    ReachEnv,
)
from marl_envs.torch_mpe import TASKS as TORCH_MPE_TASKS
from marl_envs.torch_mpe import parallel_view
from pettingzoo import AECEnv, ParallelEnv
from pettingzoo.utils.conversions import aec_to_parallel

Constructor = tuple[Callable[..., Any], Any]
"""``(callable building the env from kwargs, object whose signature lists the kwargs)``."""

_VERSIONED_MODULE = re.compile(r"^[a-z0-9_]+_v\d+$")
_VERSION_SUFFIX = re.compile(r"_v(\d+)$")


@dataclass(frozen=True)
class ModuleFamily:
    """Tasks that are modules ``<package>.<name>`` with a ``parallel_env(**kwargs)``.

    Attributes:
        package: the package holding one module per task.
        install: the command that installs the package (or the task's extras).
        aec_fallback: for modules with only an AEC ``env``, convert it with
            ``aec_to_parallel`` when its metadata says it is parallelizable.
    """

    package: str
    install: str
    aec_fallback: bool = False

    def installed(self) -> bool:
        return importlib.util.find_spec(self.package) is not None

    def task_names(self) -> list[str]:
        package = importlib.import_module(self.package)
        modules = pkgutil.iter_modules(package.__path__)
        return sorted(info.name for info in modules if _VERSIONED_MODULE.match(info.name))

    def constructor(self, task: str, name: str) -> Constructor:
        module = _import(task, f"{self.package}.{name}", self.install)
        signature_source = getattr(module, "raw_env", None)
        if hasattr(module, "parallel_env"):
            return module.parallel_env, signature_source or module.parallel_env
        if self.aec_fallback and hasattr(module, "env"):
            return partial(aec_as_parallel, task, module.env), signature_source or module.env
        raise UnknownTaskError(f"module {module.__name__} has no parallel_env() to build {task!r}.")


@dataclass(frozen=True)
class PettingZooFamily:
    """Tasks of PettingZoo's registry in one namespace, built with ``pettingzoo.make``.

    Task names keep the module spelling (``pistonball_v6`` for the registry's
    ``butterfly/pistonball-v6``). Tasks registered only as AEC envs are converted with
    ``aec_to_parallel`` when their metadata says they are parallelizable.
    """

    namespace: str
    install: str

    def installed(self) -> bool:
        return True

    def task_names(self) -> list[str]:
        prefix = f"{self.namespace}/"
        return sorted(
            env_id[len(prefix) :].replace("-v", "_v")
            for env_id in pettingzoo.aec_registry
            if env_id.startswith(prefix)
        )

    def constructor(self, task: str, name: str) -> Constructor:
        env_id = self.namespace + "/" + _VERSION_SUFFIX.sub(r"-v\1", name)
        parallel_spec = pettingzoo.parallel_registry.get(env_id)
        spec = parallel_spec or pettingzoo.aec_registry[env_id]
        signature_source: Any = None
        if isinstance(spec.entry_point, str):
            module_name, _, attribute = spec.entry_point.partition(":")
            module = _import(task, module_name, self.install)
            signature_source = getattr(module, "raw_env", getattr(module, attribute))
        if parallel_spec is not None:
            return partial(pettingzoo.make, "parallel", env_id), signature_source
        return partial(aec_as_parallel, task, partial(pettingzoo.make, "aec", env_id)), (
            signature_source
        )


@dataclass(frozen=True)
class TaskTable:
    """Tasks defined in this package: a plain table from name to ParallelEnv class."""

    tasks: Mapping[str, Callable[..., ParallelEnv]]
    install: str = "(part of marlshare)"

    def installed(self) -> bool:
        return True

    def task_names(self) -> list[str]:
        return sorted(self.tasks)

    def constructor(self, task: str, name: str) -> Constructor:
        return self.tasks[name], self.tasks[name]


@dataclass(frozen=True)
class BatchedTaskTable(TaskTable):
    """Tasks that are batched envs themselves: a table from name to a function building
    ``num_envs`` copies (``build(num_envs=..., device=..., include_state=..., **kwargs)``).

    ``make`` calls the function; ``make_parallel_env`` gets a PettingZoo view of one copy.
    """

    tasks: Mapping[str, Callable[..., BatchedEnv]]

    def constructor(self, task: str, name: str) -> Constructor:
        return partial(parallel_view, self.tasks[name]), self.tasks[name]


Family = ModuleFamily | PettingZooFamily | TaskTable | BatchedTaskTable


def _pettingzoo_family(namespace: str) -> PettingZooFamily | ModuleFamily:
    install = f'pip install "pettingzoo[{namespace}]"'
    if hasattr(pettingzoo, "parallel_registry"):
        return PettingZooFamily(namespace, install)
    return ModuleFamily(f"pettingzoo.{namespace}", install, aec_fallback=True)


TOY_TASKS: dict[str, Callable[..., ParallelEnv]] = {
    "endless": EndlessEnv,
    "coop_match": CoopMatchEnv,
    "leave_early": LeaveEarlyEnv,
    "grid_nav": GridNavEnv,
    "matrix_game": MatrixGameEnv,
    "reach": ReachEnv,
    "memory": MemoryEnv,
    "hidden_roles": HiddenRolesEnv,
}

FAMILIES: dict[str, Family] = {
    "mpe2": ModuleFamily("mpe2", install="pip install mpe2"),
    "sisl": _pettingzoo_family("sisl"),
    "butterfly": _pettingzoo_family("butterfly"),
    "classic": _pettingzoo_family("classic"),
    "atari": _pettingzoo_family("atari"),
    "toy": TaskTable(TOY_TASKS),
    "torch": BatchedTaskTable(TORCH_MPE_TASKS),
}


def aec_as_parallel(task: str, env_fn: Callable[..., AECEnv], **kwargs: Any) -> ParallelEnv:
    """Build an AEC env and convert it, refusing turn-based games with a way out."""
    aec_env = env_fn(**kwargs)
    if not aec_env.metadata.get("is_parallelizable", False):
        aec_env.close()
        raise NotParallelizableError(
            f"task {task!r} is turn-based (AEC only, metadata is_parallelizable=False), so "
            "it cannot be stepped as a ParallelEnv with all agents acting at once. To train "
            "on it anyway, write a function returning "
            "pettingzoo.utils.conversions.turn_based_aec_to_parallel(env) and pass it as "
            "'module.path:function'."
        )
    return aec_to_parallel(aec_env)


def _import(task: str, module_name: str, install: str) -> Any:
    try:
        return importlib.import_module(module_name)
    except ImportError as error:
        raise MissingDependencyError(
            f"task {task!r} needs the module {error.name!r}, which is not installed "
            f"({error}). Install it with: {install}"
        ) from error
