"""Task ids, families, kwargs and their error messages (marl_envs.registry)."""

from __future__ import annotations

import pickle
import sys

import marl_envs
import pytest
import torch
from marl_envs import (
    MissingDependencyError,
    NotParallelizableError,
    TaskFactory,
    TaskKwargsError,
    UnknownTaskError,
    UnsupportedSpaceError,
)
from marl_envs.families import FAMILIES, ModuleFamily


def test_typo_in_task_name_suggests_the_closest_task() -> None:
    with pytest.raises(UnknownTaskError) as caught:
        marl_envs.make("mpe2/simple_sprad_v3")
    message = str(caught.value)
    assert "Did you mean ['mpe2/simple_spread_v3'" in message
    assert "simple_speaker_listener_v4" in message  # lists the family's tasks
    assert isinstance(caught.value, ValueError)


def test_unversioned_task_name_suggests_the_versioned_one() -> None:
    with pytest.raises(UnknownTaskError, match="mpe2/simple_spread_v3"):
        marl_envs.make("mpe2/simple_spread")


def test_unknown_family_lists_families_and_suggests_one() -> None:
    with pytest.raises(UnknownTaskError) as caught:
        marl_envs.make("mpee/simple_spread_v3")
    message = str(caught.value)
    assert "Did you mean ['mpe2']" in message
    for family in ("mpe2", "toy", "classic", "sisl", "butterfly"):
        assert family in message
    assert "module.path:function" in message


def test_malformed_task_id_explains_the_two_forms() -> None:
    with pytest.raises(UnknownTaskError, match=r"family/name.*module\.path:function"):
        marl_envs.make("simple_spread_v3")


def test_module_function_task_is_called_with_kwargs() -> None:
    env = marl_envs.make("tiny_parallel_envs:hetero_env", num_envs=2, kwargs={"length": 2})
    env.reset(seed=0)
    actions = {
        name: torch.zeros((2, spec.num_agents, *spec.action_space.shape))
        if spec.action_space.shape
        else torch.zeros(2, spec.num_agents, dtype=torch.int64)
        for name, spec in env.groups.items()
    }
    assert not env.step(actions).env_done.any()
    assert env.step(actions).env_done.all()
    env.close()


@pytest.mark.parametrize(
    ("task", "error", "message"),
    [
        ("tiny_parallel_envs:hetero_envs", UnknownTaskError, "Did you mean \\['hetero_env'\\]"),
        ("no_such_module_xyz:make", UnknownTaskError, "cannot import module 'no_such_module_xyz'"),
        ("tiny_parallel_envs:not_an_env", TypeError, "expected a PettingZoo ParallelEnv"),
        ("tiny_parallel_envs:box", TypeError, "expected a PettingZoo ParallelEnv"),
    ],
)
def test_bad_module_function_tasks(task: str, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        marl_envs.make_parallel_env(task)


def test_kwargs_reach_the_constructor() -> None:
    env = marl_envs.make("mpe2/simple_spread_v3", kwargs={"N": 4})
    assert env.groups["agent"].num_agents == 4
    env.close()


@pytest.mark.parametrize(
    ("task", "kwargs", "suggestion"),
    [
        ("mpe2/simple_spread_v3", {"n": 4}, "'N'"),
        ("toy/coop_match", {"num_agent": 3}, "'num_agents'"),
    ],
)
def test_bad_kwarg_names_task_kwarg_and_suggestion(
    task: str, kwargs: dict, suggestion: str
) -> None:
    with pytest.raises(TaskKwargsError) as caught:
        marl_envs.make(task, kwargs=kwargs)
    message = str(caught.value)
    assert repr(task) in message and repr(next(iter(kwargs))) in message
    assert f"Did you mean {suggestion}?" in message


def test_missing_extra_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    # Box2D hidden whether or not the extra is installed: `None` in sys.modules makes its
    # import fail, and the sisl modules already imported are dropped so they import again.
    for name in list(sys.modules):
        if name.startswith(("pettingzoo.sisl", "Box2D")):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "Box2D", None)
    with pytest.raises(MissingDependencyError) as caught:
        marl_envs.make("sisl/multiwalker_v9")
    message = str(caught.value)
    assert "Box2D" in message and 'pip install "pettingzoo[sisl]"' in message


def test_family_not_installed_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    family = ModuleFamily("no_such_package_xyz", install="pip install no-such-package")
    monkeypatch.setitem(FAMILIES, "future", family)
    assert "future" not in marl_envs.list_families(installed_only=True)
    with pytest.raises(MissingDependencyError, match=r"'future' is not installed.*pip install no-"):
        marl_envs.make("future/some_task_v0")
    with pytest.raises(UnknownTaskError, match=r"not installed: \['future'\]"):
        marl_envs.make("futur/some_task_v0")


def test_turn_based_classic_game_is_refused_with_a_way_out() -> None:
    with pytest.raises(NotParallelizableError, match="turn_based_aec_to_parallel"):
        marl_envs.make("classic/tictactoe_v3")


def test_parallel_classic_game_builds_and_its_spaces_are_checked() -> None:
    env = marl_envs.make_parallel_env("classic/rps_v2")
    assert env.possible_agents == ["player_0", "player_1"]
    # rock-paper-scissors observes a Discrete space: rejected with the agent named.
    with pytest.raises(UnsupportedSpaceError, match=r"'player_0'.*Discrete"):
        marl_envs.make("classic/rps_v2")


def test_task_lists() -> None:
    assert marl_envs.list_tasks("toy") == [
        "toy/coop_match", "toy/endless", "toy/grid_nav", "toy/hidden_roles", "toy/leave_early",
        "toy/matrix_game", "toy/memory", "toy/reach",
    ]
    everything = marl_envs.list_tasks()
    assert "mpe2/simple_spread_v3" in everything and "toy/endless" in everything
    assert set(marl_envs.list_families(installed_only=True)) <= set(marl_envs.list_families())
    assert "mpe2" in marl_envs.list_families(installed_only=True)


def test_vector_options_are_validated() -> None:
    with pytest.raises(ValueError, match="vector must be one of"):
        marl_envs.make("toy/endless", vector="threads")
    with pytest.raises(ValueError, match="num_workers applies to vector='subprocess'"):
        marl_envs.make("toy/endless", num_workers=2)


def test_task_factory_pickles_and_builds_time_limited_envs() -> None:
    factory = pickle.loads(pickle.dumps(TaskFactory("toy/endless", {"max_steps": 50}, 3)))
    env = factory()
    env.reset(seed=0)
    for _ in range(3):
        _, _, terminations, truncations, _ = env.step(dict.fromkeys(env.agents, 0))
    assert all(truncations.values()) and not any(terminations.values())
    assert env.agents == []
