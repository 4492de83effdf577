"""``marl eval`` in another env than the run trained in (``--override``), random play, and
what a checkpoint must fit (:mod:`marl.evaluate`, :mod:`marl.transfer`)."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import torch
from marl_envs.core import BatchedEnv

import marl.evaluate
from marl import checkpoint
from marl.algos.registry import ALGORITHMS
from marl.build import build_env, make_learner
from marl.cli import main
from marl.config import ConfigError, apply, load
from marl.experiments.sweep import expand, load_sweep
from marl.normalize import RunningMeanStd
from marl.play import EpisodeReturns, play_episodes
from marl.trainer import train
from marl.transfer import TRAINING_ONLY, check_layouts, training_only

SWEEP = Path(__file__).resolve().parents[1] / "benchmarks/sweeps/entity_transfer_spread.yaml"
SPREAD = "torch/simple_spread_v3"
ENTITY = {"groups.encoder": "entity", "groups.entity_layout": "mpe_spread"}
# The recipe for a policy that plays any number of agents.
TRANSFERABLE = {**ENTITY, "groups.agent_id": False, "algo.obs_norm": False}


def _train(run_dir: Path, steps: int, **keys: Any) -> Path:
    overrides = {"env.task": SPREAD, "env.num_envs": 8, "algo.num_steps": 16,
                 "train.total_env_steps": steps, "train.log_every": steps,
                 "train.checkpoint_every": steps, "train.eval_every": 0,
                 "run.dir": str(run_dir), "run.tensorboard": False, "train.progress": False,
                 "torch_threads": 1, **keys}
    train(load(overrides=overrides))
    return run_dir


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Runs on simple_spread with N=3: the transferable recipe (2,048 env steps), and
    128-step runs that each keep one size-bound key."""
    root = tmp_path_factory.mktemp("transfer")
    return {"entity": _train(root / "entity", 2048, **TRANSFERABLE),
            "mlp": _train(root / "mlp", 128),
            "entity_id": _train(root / "entity_id", 128, **{**TRANSFERABLE,
                                                             "groups.agent_id": True}),
            "mappo": _train(root / "mappo", 128, **TRANSFERABLE, **{"algo.name": "mappo"})}


def _eval(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, Any, str]:
    code = main(["eval", *argv])
    captured = capsys.readouterr()
    return code, json.loads(captured.out) if code == 0 else None, captured.err


class Spy:
    """Wraps :func:`marl.play.play_episodes`: records what played, in which env, and every
    action the env was given."""

    def __init__(self) -> None:
        self.actors: list[Any] = []
        self.obs_shapes: list[tuple[int, ...]] = []
        self.actions: list[torch.Tensor] = []

    def __call__(self, algo: Any, env: BatchedEnv, episodes: int, seed: int,
                 sample: bool = False) -> EpisodeReturns:
        self.actors.append(algo)
        step = env.step

        def recorded(actions: dict[str, torch.Tensor]) -> Any:
            self.actions.append(actions["agent"].cpu())
            out = step(actions)
            self.obs_shapes.append(tuple(out.groups["agent"].next.obs.shape))
            return out

        env.step = recorded  # type: ignore[method-assign]
        return play_episodes(algo, env, episodes, seed, sample)


@pytest.fixture
def spy(monkeypatch: pytest.MonkeyPatch) -> Spy:
    recorder = Spy()
    monkeypatch.setattr(marl.evaluate, "play_episodes", recorder)
    return recorder


def test_an_entity_policy_trained_with_3_agents_plays_5(
        runs: dict[str, Path], spy: Spy, capsys: pytest.CaptureFixture[str]) -> None:
    code, result, err = _eval([str(runs["entity"]), "--episodes", "6", "--override",
                               "env.kwargs.N=5"], capsys)
    assert code == 0, err
    assert result["overrides"] == {"env.kwargs.N": 5} and result["num_agents"] == {"agent": 5}
    assert result["episodes"] == 6 and math.isfinite(result["episode_return_mean"])
    assert result["policy"] == "checkpoint" and result["not_loaded"] == []
    # The env really had 5 agents observing 6N = 30 features each, every step.
    assert spy.obs_shapes and all(shape[1:] == (5, 30) for shape in spy.obs_shapes)
    assert all(actions.shape[1:] == (5,) for actions in spy.actions)
    # What played is the trained policy: every tensor equals the checkpoint's.
    saved = checkpoint.load(Path(result["checkpoint"]))["modules"]["groups"]
    played = spy.actors[0].modules()["groups"].state_dict()
    assert played.keys() == saved.keys()
    assert all(torch.equal(played[key], saved[key]) for key in saved)


def test_an_override_to_the_trained_size_plays_exactly_as_without_one(
        runs: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    plain = _eval([str(runs["entity"]), "--episodes", "4"], capsys)[1]
    same = _eval([str(runs["entity"]), "--episodes", "4", "--override", "env.kwargs.N=3"],
                 capsys)[1]
    assert same["episode_return_mean"] == plain["episode_return_mean"]
    assert same["num_agents"] == plain["num_agents"] == {"agent": 3}


def test_mappo_plays_5_agents_without_its_state_critic(
        runs: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    """The state critic reads the global state, whose size follows N; acting never reads
    it, so it is left out (and said so) while the policy loads strictly."""
    code, result, err = _eval([str(runs["mappo"]), "--episodes", "2", "--override",
                               "env.kwargs.N=5"], capsys)
    assert code == 0, err
    assert result["num_agents"] == {"agent": 5}
    assert result["not_loaded"] and all(training_only(name) for name in result["not_loaded"])
    assert "groups.agent.critic.mlp.0.weight" in result["not_loaded"]
    assert not any(".actor." in name for name in result["not_loaded"])


def test_an_mlp_policy_is_refused_naming_its_tensors_and_every_cause(
        runs: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _eval([str(runs["mlp"]), "--override", "env.kwargs.N=5"], capsys)
    assert code == 1 and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert "does not fit env.kwargs.N=5 (group 'agent': 3 -> 5 agents, observation [18] -> " \
           "[30])" in err
    for fix in ("groups.agent_id=false", "groups.encoder=entity", "algo.obs_norm=false"):
        assert f"train with {fix}" in err
    # 18 features + a one-hot ID of 3 in training, 30 + 5 at N=5.
    assert "groups.agent.actor.mlp.0.weight [64, 21] -> [64, 35]" in err


def test_only_the_keys_that_bind_the_policy_to_the_size_are_named(
        runs: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _eval([str(runs["entity_id"]), "--override", "env.kwargs.N=4"], capsys)
    assert code == 1
    assert "groups.agent_id=true adds a one-hot ID of size N" in err
    assert "obs_norm" not in err and "groups.encoder" not in err
    # 64 entity features + a one-hot ID of 3 in training, of 4 now; the critic is not named.
    assert "groups.agent.actor.trunk.net.blocks.0.linear.weight [64, 67] -> [64, 68]" in err
    assert ".critic." not in err


def test_random_play_draws_every_action_uniformly_and_needs_no_checkpoint(
        runs: dict[str, Path], spy: Spy, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    shutil.copytree(runs["entity"], run)
    shutil.rmtree(run / "checkpoints")
    code, result, err = _eval([str(run), "--random", "--episodes", "16", "--override",
                               "env.kwargs.N=5"], capsys)
    assert code == 0, err
    assert result["policy"] == "random" and result["checkpoint"] is None
    assert result["num_agents"] == {"agent": 5} and result["episodes"] == 16
    # 16 episodes x 25 steps x 5 agents = 2,000 draws of Discrete(5): each about 400
    # (binomial std 18); a policy would not spread its actions this evenly.
    counts = Counter(torch.cat([a.flatten() for a in spy.actions]).tolist())
    assert sorted(counts) == [0, 1, 2, 3, 4]
    total = sum(counts.values())
    assert total >= 2000 and all(abs(n / total - 0.2) < 0.04 for n in counts.values())
    # Same seed, same episodes.
    again = _eval([str(run), "--random", "--episodes", "16", "--override", "env.kwargs.N=5"],
                  capsys)[1]
    assert again["episode_return_mean"] == result["episode_return_mean"]


@pytest.mark.parametrize("name", list(ALGORITHMS))
def test_acting_never_reads_what_is_marked_training_only(name: str) -> None:
    """Every module and normaliser that ``eval_actions`` runs lies outside
    :data:`TRAINING_ONLY`, so leaving those tensors out cannot change what a policy does."""
    continuous = name in ("maddpg", "matd3")
    config = load(overrides={"env.task": SPREAD, "env.num_envs": 2, "env.kwargs.N": 2,
                             "env.kwargs.continuous_actions": continuous, "algo.name": name})
    env = build_env(config, torch.device("cpu"))
    learner = make_learner(env, config, torch.device("cpu"))
    used: set[str] = set()
    for module_name, module in learner.modules().items():
        for sub_name, sub in module.named_modules(prefix=module_name):
            sub.register_forward_pre_hook(lambda *_, n=sub_name: used.add(n))
            if isinstance(sub, RunningMeanStd):
                normalize = sub.normalize
                sub.normalize = (  # type: ignore[method-assign]
                    lambda x, *a, n=sub_name, f=normalize: (used.add(n), f(x, *a))[1])
    current = env.reset(seed=0)
    learner.eval_actions(current, False, learner.new_memory(env.num_envs))
    env.close()
    assert any(".obs_norm" in n or n.startswith("obs_norm") for n in used), used
    assert len(used) > 3  # the hooks see the policy's modules
    read = sorted(n for n in used if training_only(n + ".weight"))
    assert read == [], f"{name} reads training-only modules while acting: {read}"


def test_every_training_only_prefix_names_a_part_of_some_learner() -> None:
    names: set[str] = set()
    for name in ALGORITHMS:
        config = load(overrides={"env.task": SPREAD, "env.num_envs": 2, "env.kwargs.N": 2,
                                 "env.kwargs.continuous_actions": name in ("maddpg", "matd3"),
                                 "algo.name": name})
        env = build_env(config, torch.device("cpu"))
        learner = make_learner(env, config, torch.device("cpu"))
        env.close()
        for module_name, module in learner.modules().items():
            names.update(f"{module_name}.{key}" for key in module.state_dict())
    for pattern in TRAINING_ONLY:
        parts = pattern.split(".")
        assert any(all(p in ("*", q) for p, q in zip(parts, name.split("."), strict=False))
                   for name in names), f"{pattern} matches no learner's checkpoint"


def test_training_only_matches_whole_names_from_the_start() -> None:
    assert training_only("groups.agent.critic.mlp.0.weight")
    assert training_only("groups.speaker.value_norm.mean")
    assert training_only("mixer.hyper_w1.0.weight") and training_only("state_norm.state.mean")
    assert not training_only("groups.agent.actor.mlp.0.weight")
    assert not training_only("groups.agent.obs_norm.mean")
    assert not training_only("q.agent.critic.weight")  # "critic" deeper than the pattern
    assert not training_only("mixer")  # a module name alone is no tensor
    assert not training_only("actor.agent.mlp.0.weight")


def test_fixed_entity_slices_are_refused_at_another_observation_size() -> None:
    """An explicit layout keeps the training positions: at N=5 its landmark slice would read
    other features with no shape changing, so no shape check would catch it."""
    layout = [{"kind": "self", "start": 0, "count": 1, "width": 4},
              {"kind": "landmark", "start": 4, "count": 3, "width": 2}]
    config = load(overrides={"env.task": SPREAD, "env.num_envs": 1,
                             "groups.entity_layout": layout})
    specs = {}
    for n in (3, 5):
        env = build_env(apply(config, {"env.kwargs.N": n}), torch.device("cpu"))
        specs[n] = dict(env.groups)
        env.close()
    check_layouts(config, specs[3], specs[3])  # same size: nothing to refuse
    with pytest.raises(ConfigError, match=r"groups\.entity_layout lists fixed slices of the "
                                          r"observation group 'agent' trained on, \[18\]; "
                                          r"at \[30\] they would read other features"):
        check_layouts(config, specs[3], specs[5])
    preset = apply(config, {"groups.entity_layout": "mpe_spread"})
    check_layouts(preset, specs[3], specs[5])  # the preset follows N


def test_the_transfer_sweep_trains_one_policy_shape_at_every_n() -> None:
    """The sweep's runs at N = 3, 4, 5 build policies with the same tensors and shapes
    (only training-only tensors may differ), so each plays at every N."""
    runs = expand(load_sweep(SWEEP))
    assert sorted((run.config.env.kwargs["N"], run.config.seed) for run in runs) == [
        (n, seed) for n in (3, 4, 5) for seed in (1, 2, 3)]
    shapes = {}
    for run in runs[::3]:
        config = apply(run.config, {"env.num_envs": 2})
        env = build_env(config, torch.device("cpu"))
        learner = make_learner(env, config, torch.device("cpu"))
        env.close()
        shapes[config.env.kwargs["N"]] = {
            f"{module_name}.{key}": tuple(value.shape)
            for module_name, module in learner.modules().items()
            for key, value in module.state_dict().items()
            if not training_only(f"{module_name}.{key}")}
    assert shapes[3] == shapes[4] == shapes[5]
    assert any(".encoder." in name for name in shapes[3])  # the entity encoder is there


def test_the_transfer_benchmark_plays_every_policy_at_every_size(tmp_path: Path) -> None:
    """``benchmarks/entity_transfer.py`` over a sweep-shaped folder: N=3 and N=4, one seed."""
    sweep = tmp_path / "sweep"
    for n in (3, 4):
        _train(sweep / f"abc__env.kwargs.N={n}" / "seed_1", 128,
               **{**TRANSFERABLE, "env.kwargs.N": n})
    # A run that has not trained its budget yet (checkpoints, metrics, but short of it).
    unfinished = _train(sweep / "abc__env.kwargs.N=3" / "seed_2", 128, **TRANSFERABLE)
    config = unfinished / "config.yaml"
    config.write_text(config.read_text().replace("total_env_steps: 128",
                                                 "total_env_steps: 100000"))
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.entity_transfer", str(sweep), "--episodes", "4",
         "--out", str(out)], cwd=Path(SWEEP).parents[2], capture_output=True, text=True,
        check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    rows = json.loads((out / "results.json").read_text())["rows"]
    played = {(row["n"], row["which"]): row for row in rows}
    # The unfinished seed 2 is left out; random play (one per N) belongs to no seed.
    assert {row["seed"] for row in rows if row["which"] != "random"} == {1}
    assert len(rows) == 6 and {row["seed"] for row in rows if row["which"] == "random"} == {None}
    assert set(played) == {(n, p) for n in (3, 4)
                           for p in ("N=3 policy", "trained at N", "random")}
    for (n, policy), row in played.items():
        assert row["num_agents"] == {"agent": n} and row["episodes"] == 4
        trained_at = 4 if (n, policy) == (4, "trained at N") else 3
        assert row["run_dir"].endswith(f"N={trained_at}/seed_1")
        assert row["policy"] == ("random" if policy == "random" else "checkpoint")
    # At N=3, the source policy and "trained at N" are one play of one run, unchanged env.
    assert played[(3, "N=3 policy")]["run_dir"] == played[(3, "trained at N")]["run_dir"]
    assert played[(3, "N=3 policy")]["overrides"] == {}
    assert played[(4, "N=3 policy")]["overrides"] == {"env.kwargs.N": 4}
    table = (out / "results.md").read_text()
    assert "| 4 | N=3 policy | 1 |" in table and "| 4 | random | - |" in table
