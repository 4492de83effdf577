"""The learner contract, the algorithm registry, and the import graph of ``marl``."""

import ast
from pathlib import Path

import pytest
import torch
from marl_envs import make as make_env

from marl.algos.base import Learner
from marl.algos.registry import ACTION_KINDS, ALGORITHMS
from marl.build import build_env, learner_class, make_learner
from marl.cli import main
from marl.config import CHOICES, Config, ConfigError, load
from marl.logging import EpisodeTracker

CPU = torch.device("cpu")
MARL = Path(__file__).resolve().parents[1] / "marl"
TASKS = {"discrete": "toy/coop_match", "continuous": "toy/reach"}


pytestmark = pytest.mark.usefixtures("one_thread")


def _tiny(name: str, task: str) -> Config:
    return load(overrides={"algo.name": name, "env.task": task, "env.num_envs": "2",
                           "algo.num_steps": "4", "algo.num_minibatches": "1",
                           "algo.warmup_steps": "8", "algo.batch_size": "4",
                           "algo.buffer_size": "32", "groups.hidden": "[8]"})


@pytest.mark.parametrize("name", list(ALGORITHMS))
def test_every_registered_learner_keeps_the_contract(name: str) -> None:
    spec = ALGORITHMS[name]
    config = _tiny(name, TASKS[spec.actions[-1]])
    env = build_env(config, CPU)
    try:
        learner = make_learner(env, config, CPU)
        assert isinstance(learner, Learner)
        assert type(learner) is learner_class(name)
        # The env carries the global state exactly for the algorithms that read it.
        current = env.reset(seed=0)
        assert (current.state is not None) == spec.global_state
        tracker = EpisodeTracker({n: s.num_agents for n, s in env.groups.items()},
                                 env.num_envs, CPU)
        steps = 0
        for _ in range(3):
            steps += learner.collect(tracker)
        assert steps == 3 * 4 * 2
        metrics = learner.update(0.0)
        assert metrics and all(isinstance(v, float) for v in metrics.values())
        actions = learner.eval_actions(current, False, learner.new_memory(env.num_envs))
        assert set(actions) == set(env.groups)
        for group, action in actions.items():
            assert action.shape[:2] == (2, env.groups[group].num_agents)
        assert learner.modules() and learner.optimizer.state_dict()
        learner.load_extra_state(learner.extra_state())
        assert (learner.replay_buffer() is None) == spec.on_policy
        learner.reset_env(seed=1)
    finally:
        env.close()


def test_registry_is_the_config_choices_and_the_help() -> None:
    assert CHOICES["algo.name"] == tuple(ALGORITHMS)
    for spec in ALGORITHMS.values():
        assert set(spec.actions) <= set(ACTION_KINDS) and spec.actions
        assert spec.summary and "\n" not in spec.summary


def test_train_help_lists_every_algorithm_with_its_summary(
        capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())  # argparse may wrap lines
    for name, spec in ALGORITHMS.items():
        assert f"'{name}': {spec.summary}" in text, name


@pytest.mark.parametrize(("name", "task", "message"), [
    ("maddpg", "toy/coop_match", r"algo\.name=maddpg needs continuous .* Discrete\(3\)\. "
     r"For this action space use algo\.name=ippo, mappo, iql, vdn or qmix"),
    ("qmix", "toy/reach", r"algo\.name=qmix needs discrete .* Box.* use "
     r"algo\.name=ippo, mappo, maddpg or matd3"),
])
def test_action_space_check_names_the_algorithms_that_fit(name: str, task: str,
                                                          message: str) -> None:
    config = _tiny(name, task)
    env = make_env(task, num_envs=2)
    try:
        with pytest.raises(ConfigError, match=message):
            make_learner(env, config, CPU)
    finally:
        env.close()


def _module_name(path: Path) -> str:
    parts = path.relative_to(MARL.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, modules: set[str]) -> set[str]:
    """The ``marl`` modules ``path`` imports anywhere in it (function level and
    ``TYPE_CHECKING`` blocks included)."""
    found = set()
    package = _module_name(path) if path.name == "__init__.py" else \
        _module_name(path).rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            # `from marl.x import y` imports marl.x.y when that is a module.
            names = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            while name and name not in modules:  # `marl.a.b.c` -> its nearest module
                name = name.rpartition(".")[0]
            if name and name != _module_name(path):
                found.add(name)
    return found


def _import_graph() -> dict[str, set[str]]:
    paths = sorted(MARL.glob("*.py")) + sorted(MARL.glob("*/*.py"))
    modules = {_module_name(p) for p in paths}
    return {_module_name(p): _imports(p, modules) for p in paths}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` as a path of modules, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt):], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_marl_has_no_import_cycles() -> None:
    graph = _import_graph()
    assert "marl.config_rules" in graph and "marl.algos.registry" in graph["marl.config_rules"]
    cycle = _cycle(graph)
    assert cycle is None, " -> ".join(cycle or [])
