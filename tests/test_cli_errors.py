"""Every user error of the ``marl`` command: a non-zero exit, one line naming the key or
file involved, and never a Python traceback.

Most cases call :func:`marl.cli.main` in this process (a fresh interpreter costs seconds
of imports); the cases marked ``subprocess`` run ``python -m marl.cli`` for real.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import marl_envs
import pytest
import yaml

import marl
from marl.cli import main
from marl.config import apply, dump, load
from marl.trainer import train

BAD_TASKS = '''
def returns_none():
    return None


def returns_text():
    return "not an env"


def raises():
    raise ValueError("the env refused to start")
'''


@dataclass(frozen=True)
class Case:
    """``argv`` after ``marl`` ({name} marks a prepared path); ``message``: a regex the one
    error line must match; ``subprocess``: run it as a real ``python -m marl.cli``."""

    name: str
    argv: tuple[str, ...]
    message: str
    subprocess: bool = False
    usage: bool = False  # an argparse error: usage lines come before the message


def case(name: str, command: str, message: str, **options: bool) -> Case:
    return Case(name, tuple(command.split()), message, **options)


CASES = [
    # Keys and values, from the command line.
    case("unknown key", "train optim.lrr=0.1", r"unknown config key 'optim.lrr'.*'optim.lr'"),
    case("key in the wrong section", "train total_env_steps=10", "'train.total_env_steps'"),
    case("not key=value", "train optim.lr", r"expected key=value, got 'optim.lr'"),
    case("wrong type", "train env.num_envs=many", r"env.num_envs: expected int, got 'many'"),
    case("gamma above 1", "train algo.gamma=1.5",
         r"algo\.gamma: expected a number in \(0, 1\], got 1\.5; e\.g\. algo\.gamma=0\.99",
         subprocess=True),
    case("negative learning rate", "train optim.lr=-1", r"optim\.lr: expected a number > 0"),
    case("NaN coefficient", "train algo.clip_coef=nan", r"algo\.clip_coef: .* got nan"),
    case("infinite clip norm", "train optim.max_grad_norm=inf",
         r"optim\.max_grad_norm: expected a number > 0 or None, got inf"),
    case("zero env steps", "train train.total_env_steps=0",
         r"train\.total_env_steps: expected an integer >= 1, got 0"),
    case("zero hidden size", "train groups.hidden=[64,0]",
         r"groups\.hidden: expected a list of integers >= 1, got \[64, 0\]"),
    case("negative seed", "train seed=-1", r"seed: expected an integer in \[0, 4294967295\]"),
    case("zero threads", "train torch_threads=0", r"torch_threads: expected an integer >= 1"),
    case("unknown choice", "train groups.sharing=sometimes",
         r"groups\.sharing: expected one of shared, independent, selective; got 'sometimes'"),
    case("epsilon rises", "train algo.eps_start=0.1 algo.eps_end=0.5",
         r"algo\.eps_end=0\.5 is above algo\.eps_start=0\.1"),
    case("more minibatches than samples",
         "train env.num_envs=2 algo.num_steps=2 algo.num_minibatches=8",
         r"algo\.num_minibatches=8 is more than the 4 samples"),
    case("section given a value", "train optim=3", r"optim: a section; expected a mapping"),
    case("unknown rnn", "train groups.rnn=lstm", r"groups\.rnn: expected one of none, gru"),
    case("gru with maddpg", "train groups.rnn=gru hpset=maddpg_mpe",
         r"groups\.rnn=gru: algo\.name=maddpg trains feed-forward agents only; use one of "
         r"ippo, mappo, iql, vdn, qmix"),
    case("gru with layer norm", "train groups.rnn=gru groups.layer_norm=true",
         r"groups\.layer_norm=true shapes the feed-forward trunk"),
    case("seq_len not dividing the rollout", "train groups.rnn=gru algo.seq_len=7",
         r"algo\.seq_len=7 does not divide algo\.num_steps=50"),
    case("more minibatches than sequences",
         "train groups.rnn=gru env.num_envs=2 algo.num_steps=10 algo.num_minibatches=3",
         r"algo\.num_minibatches=3 is more than the 2 sequences of a rollout"),
    case("zero rnn_hidden", "train groups.rnn=gru groups.rnn_hidden=0",
         r"groups\.rnn_hidden: expected an integer >= 1"),
    case("negative burn-in", "train algo.burn_in=-1", r"algo\.burn_in: expected an integer >= 0"),
    case("unknown hpset", "train hpset=nope", r"unknown hpset 'nope'; available: .*ippo_tiny"),
    # Config files.
    case("missing config file", "train --config {inputs}/missing.yaml",
         r"config file .*missing\.yaml does not exist", subprocess=True),
    case("directory as config file", "train --config {inputs}",
         r"config file .*inputs is a directory"),
    case("invalid YAML", "train --config {inputs}/bad.yaml",
         r"bad\.yaml: not valid YAML: line 2"),
    case("YAML that is not a mapping", "train --config {inputs}/list.yaml",
         r"list\.yaml: expected a mapping of config keys"),
    case("unreadable config file", "train --config {inputs}/binary.yaml",
         r"config file .*binary\.yaml cannot be read"),
    case("unknown key in a file", "train --config {inputs}/typo.yaml",
         r"typo\.yaml: unknown config key 'optim.learning_rate'.*'optim.lr'"),
    case("bad value in a file", "train --config {inputs}/negative.yaml",
         r"negative\.yaml: optim\.lr: expected a number > 0, got -1"),
    # Tasks.
    case("unknown family", "train env.task=nope/x", r"unknown task family 'nope'"),
    case("unknown task", "train env.task=toy/nope", r"unknown task 'toy/nope'"),
    case("malformed task id", "train env.task=toy", r"task id 'toy' must look like"),
    case("module that does not exist", "train env.task=no_such_module_xyz:make",
         r"cannot import module 'no_such_module_xyz'"),
    case("function that does not exist", "train env.task=bad_tasks:no_such_function",
         r"'bad_tasks:no_such_function'.*no attribute 'no_such_function'"),
    case("function returning None", "train env.task=bad_tasks:returns_none",
         r"task 'bad_tasks:returns_none' returned NoneType \(None\); expected a PettingZoo "
         "ParallelEnv", subprocess=True),
    case("function returning a string", "train env.task=bad_tasks:returns_text",
         r"task 'bad_tasks:returns_text' returned str \('not an env'\)"),
    case("function that raises", "train env.task=bad_tasks:raises",
         r"task 'bad_tasks:raises' failed to build .*ValueError: the env refused to start"),
    case("module that raises on import", "train env.task=broken_module:make",
         r"importing module 'broken_module' failed: RuntimeError: broken at import"),
    case("kwarg the task does not take", "train env.task=toy/coop_match env.kwargs.N=3",
         r"'toy/coop_match' does not accept the keyword argument 'N'"),
    case("action space the algorithm cannot take", "train env.task=toy/coop_match "
         "algo.name=maddpg", r"algo\.name=maddpg needs continuous .* Discrete\(3\)"),
    case("torch task refusing a kwarg's value",
         "train env.task=torch/simple_spread_v3 env.kwargs.N=0",
         r"task 'torch/simple_spread_v3' failed to build with kwargs \{'N': 0\}: ValueError: N"),
    case("make option the task cannot take", "train env.task=toy/coop_match env.num_workers=2",
         r"num_workers applies to vector='subprocess' only"),
    # Run directories and checkpoints.
    case("resume without run.dir", "train run.resume=true",
         r"run\.resume=true needs run\.dir"),
    case("empty run.dir", "train run.dir=", r"run\.dir: expected a directory path or None"),
    case("existing run dir without resume", "train run.dir={run}",
         r"run directory .*run already holds a run; pass run\.resume=true"),
    case("resume with another config", "train --config {resumable}/config.yaml "
         "run.dir={resumable} run.resume=true groups.hidden=[32]",
         r"checkpoint .*resumable.*step_\d+\.pt does not fit"),
    case("eval of a missing run dir", "eval {inputs}/nowhere",
         r"nowhere is not a run directory: no config\.yaml"),
    case("eval of a run without checkpoints", "eval {no_checkpoint}",
         r"no checkpoint in .*no_checkpoint"),
    case("eval of a corrupt checkpoint", "eval {corrupt}",
         r"checkpoint .*corrupt.*step_\d+\.pt is corrupt"),
    case("eval of another config's checkpoint", "eval {other_config}",
         r"checkpoint .*other_config.*does not fit this run's 'groups'"),
    case("eval of a run with a broken config.yaml", "eval {broken_config}",
         r"broken_config.*config\.yaml: not valid YAML"),
    case("eval of zero episodes", "eval {run} --episodes 0",
         r"episodes: expected an integer >= 1, got 0; e\.g\. --episodes 20", subprocess=True),
    case("eval of negative episodes", "eval {run} --episodes -3",
         r"episodes: expected an integer >= 1, got -3"),
    case("eval on an unknown device", "eval {run} --device tpu",
         r"device: expected one of cpu, cuda, auto, got 'tpu'"),
    case("eval without a run dir", "eval", r"RUN_DIR", usage=True),
    case("eval episodes not a number", "eval {run} --episodes many",
         r"--episodes: invalid int value: 'many'", usage=True),
    # marl eval --override: env keys only, and a policy that fits the new env.
    case("eval overriding a network key", "eval {run} --override groups.agent_id=false",
         r"--override groups\.agent_id: the networks and normalisers come from the checkpoint, "
         r"so groups\.\* and algo\.\* keys stay as the run trained them"),
    case("eval overriding an algorithm key", "eval {run} --override algo.obs_norm=false",
         r"--override algo\.obs_norm: the networks and normalisers come from the checkpoint"),
    case("eval overriding a key that is no env key", "eval {run} --override seed=3",
         r"--override seed: not an evaluation key; marl eval --override takes "
         r"env\.kwargs\.KEY=VALUE and env\.max_episode_steps=N"),
    case("eval overriding an unknown key", "eval {run} --override env.kwarg.N=3",
         r"--override env\.kwarg\.N: unknown config key; marl eval --override takes"),
    case("eval override without a value", "eval {run} --override N",
         r"--override: expected KEY=VALUE, got 'N'; e\.g\. --override env\.kwargs\.N=5",
         subprocess=True),
    case("eval override with a bad value", "eval {run} --override env.max_episode_steps=0",
         r"env\.max_episode_steps: expected an integer >= 1 or None, got 0"),
    case("eval override the task does not take", "eval {run} --override env.kwargs.N=3",
         r"'toy/coop_match' does not accept the keyword argument 'N'"),
    case("eval of a policy tied to the number of agents",
         "eval {run} --override env.kwargs.num_agents=3",
         r"checkpoint step_\d+\.pt does not fit env\.kwargs\.num_agents=3 \(group 'agent': 2 "
         r"-> 3 agents\): groups\.agent_id=true adds a one-hot ID of size N \(train with "
         r"groups\.agent_id=false\)\. Policy tensors that changed: "
         r"groups\.agent\.actor\.mlp\.0\.weight \[64, 5\] -> \[64, 6\]$", subprocess=True),
    # Sweeps (all refused before any git or job work).
    case("missing sweep file", "sweep {inputs}/missing_sweep.yaml --dry-run",
         r"sweep file .*missing_sweep\.yaml does not exist"),
    case("sweep file that is a directory", "sweep {inputs} --dry-run",
         r"sweep file .*inputs is a directory"),
    case("invalid sweep YAML", "sweep {inputs}/bad.yaml --dry-run",
         r"bad\.yaml: not valid YAML: line 2"),
    case("sweep block that is not a mapping", "sweep {inputs}/sweep_scalar.yaml --dry-run",
         r"sweep_scalar\.yaml: block 1 is 3 \(int\)"),
    case("unknown key in a sweep block", "sweep {inputs}/sweep_typo.yaml --dry-run",
         r"block 2: unknown config key 'optim.lrr'.*'optim.lr'"),
    case("bad repeat", "sweep {inputs}/sweep_repeat.yaml --dry-run",
         r"block 1: repeat must be a positive integer, got 0"),
    case("bad value in a sweep grid", "sweep {inputs}/sweep_gamma.yaml --dry-run",
         r"block 1: algo\.gamma: expected a number in \(0, 1\], got 2"),
    case("unknown hpset in a sweep", "sweep {inputs}/sweep_hpset.yaml --dry-run",
         r"block 1: unknown hpset 'nope'"),
    case("sweep with zero workers", "sweep {inputs}/sweep_repeat.yaml --workers 0",
         r"--workers: expected an integer >= 1, got '0'", usage=True),
    # Reports.
    case("report of a missing runs dir", "report {inputs}/no_runs_here",
         r"no_runs_here is not a directory", subprocess=True),
    case("report of an empty runs dir", "report {empty}", r"no runs under .*empty"),
    case("report of an unknown metric", "report {run} --metric episode_retrun",
         r"--metric episode_retrun: no run under .* logged it; did you mean episode_return"),
    case("report of zero final points", "report {run} --final-points 0",
         r"--final-points: expected an integer >= 1, got 0"),
    case("report over a run with a broken config.yaml", "report {broken_config}",
         r"broken_config.*config\.yaml: not valid YAML"),
    case("report over a run with a broken run.json", "report {broken_info}",
         r"broken_info.*run\.json: not valid JSON"),
    # Benchmarks.
    case("unknown benchmark", "bench sharng", r"unknown benchmark 'sharng'; available: .*sharing"),
]


@pytest.fixture(scope="module")
def paths(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One tiny trained run and the broken inputs derived from it."""
    root = tmp_path_factory.mktemp("cli_errors")
    run = root / "run"
    train(load(overrides={"hpset": "ippo_tiny", "train.total_env_steps": "256",
                          "train.log_every": "128", "train.checkpoint_every": "128",
                          "run.dir": str(run), "run.tensorboard": "false",
                          "train.progress": "false", "torch_threads": "1"}))
    derived = {name: root / name for name in ("resumable", "no_checkpoint", "corrupt",
                                              "other_config", "broken_config", "broken_info")}
    for folder in derived.values():
        shutil.copytree(run, folder)
    shutil.rmtree(derived["no_checkpoint"] / "checkpoints")
    for checkpoint in (derived["corrupt"] / "checkpoints").glob("step_*.pt"):
        checkpoint.write_bytes(b"half a checkpoint")
    other = apply(load(run / "config.yaml"), {"groups.hidden": [32]})
    dump(other, derived["other_config"] / "config.yaml")
    (derived["broken_config"] / "config.yaml").write_text("env: [toy\n")
    (derived["broken_info"] / "run.json").write_text('{"descriptor": "cut sh')
    inputs = root / "inputs"
    _write_inputs(inputs)
    (root / "empty").mkdir()
    return {"root": root, "run": run, "inputs": inputs, "empty": root / "empty", **derived}


def _write_inputs(inputs: Path) -> None:
    inputs.mkdir()
    (inputs / "bad_tasks.py").write_text(BAD_TASKS)
    (inputs / "broken_module.py").write_text('raise RuntimeError("broken at import")\n')
    (inputs / "bad.yaml").write_text("optim: [1\n")
    (inputs / "list.yaml").write_text("- 1\n- 2\n")
    (inputs / "binary.yaml").write_bytes(b"\xff\xfe\x00 not text")
    (inputs / "typo.yaml").write_text("optim:\n  learning_rate: 0.1\n")
    (inputs / "negative.yaml").write_text("optim:\n  lr: -1\n")
    sweeps = {"sweep_scalar": [3],
              "sweep_typo": [{"hpset": "ippo_tiny"}, {"hpset": "ippo_tiny", "optim.lrr": 0.1}],
              "sweep_repeat": [{"hpset": "ippo_tiny", "repeat": 0}],
              "sweep_gamma": [{"hpset": "ippo_tiny", "algo.gamma": [0.9, 2]}],
              "sweep_hpset": [{"hpset": "nope"}]}
    for name, blocks in sweeps.items():
        (inputs / f"{name}.yaml").write_text(yaml.safe_dump(blocks))


# Appended to train cases that do not set them: should a check ever let a case through,
# the run it starts takes a second, not the default 300k env steps.
_SMALL_RUN = ("train.total_env_steps=64", "env.num_envs=2")


def _argv(case: Case, paths: dict[str, Path]) -> list[str]:
    argv = [part.format(**{k: str(v) for k, v in paths.items()}) for part in case.argv]
    if argv[0] == "train":
        argv += [item for item in _SMALL_RUN
                 if not any(part.startswith(item.split("=")[0] + "=") for part in argv)]
    return argv


def _in_process(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        code = main(argv)
    except SystemExit as stop:  # argparse's own usage errors
        code = stop.code if isinstance(stop.code, int) else 1
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def real_runs(paths: dict[str, Path]) -> dict[str, tuple[int, str, str]]:
    """The ``subprocess`` cases, started together (each spends seconds on imports):
    ``(exit code, stdout, stderr)`` by case name."""
    packages = {str(Path(module.__file__ or "").resolve().parents[1])
                for module in (marl, marl_envs)}
    # The .pypath layout links marl_envs to envs/: keep the folder the link is found in.
    packages.add(str(Path(marl_envs.__file__ or "").parents[1]))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(paths["inputs"]), *sorted(packages),
                                         env.get("PYTHONPATH", "")])
    cwd = paths["root"] / "cwd"
    cwd.mkdir()
    started = {case.name: subprocess.Popen(
        [sys.executable, "-m", "marl.cli", *_argv(case, paths)], cwd=cwd, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for case in CASES if case.subprocess}
    results = {}
    for name, process in started.items():
        out, err = process.communicate(timeout=180)
        results[name] = (process.returncode, out, err)
    return results


@pytest.mark.parametrize("case", CASES, ids=[re.sub(r"\W+", "_", c.name) for c in CASES])
def test_user_error_is_one_line_without_traceback(
        case: Case, paths: dict[str, Path], real_runs: dict[str, tuple[int, str, str]],
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    argv = _argv(case, paths)
    monkeypatch.chdir(tmp_path)  # runs without run.dir land in ./runs: keep them here
    if case.subprocess:
        code, out, err = real_runs[case.name]
    else:
        monkeypatch.syspath_prepend(str(paths["inputs"]))
        code, out, err = _in_process(argv, capsys)
    assert code != 0
    assert "Traceback" not in out + err
    lines = [line for line in err.splitlines() if line.startswith("marl ")]
    assert len(lines) == 1, err
    if case.usage:
        assert code == 2 and "usage: marl" in err
    else:
        assert lines[0].startswith(f"marl {argv[0]}: ")
    assert re.search(case.message, lines[0]), lines[0]


def test_the_list_covers_every_command_and_real_processes() -> None:
    commands = {c.argv[0] for c in CASES}
    assert commands == {"train", "eval", "sweep", "report", "bench"}
    assert len(CASES) >= 25 and sum(c.subprocess for c in CASES) >= 5


def test_report_reads_a_half_written_metrics_file(paths: dict[str, Path], tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """A crash can leave a cut line (even a cut UTF-8 character) at the end of metrics.jsonl;
    the report uses the complete lines."""
    runs = tmp_path / "runs"
    shutil.copytree(paths["run"], runs / "crashed")
    metrics = runs / "crashed" / "metrics.jsonl"
    lines = metrics.read_text().splitlines()
    assert len(lines) == 2
    metrics.write_bytes((lines[0] + "\n").encode() + b'{"episode_return": 1.\xe2\x82\n7\n')
    assert main(["report", str(runs), "--x", "env_steps"]) == 0
    table = capsys.readouterr().out
    final = yaml.safe_load(lines[0])["episode_return"]  # JSON is YAML
    assert f"| {final:.4g} [" in table
