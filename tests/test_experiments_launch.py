"""``marl sweep`` launched for real, from other directories, with relative paths.

Jobs run in a checkout of their revision, not in the directory the sweep was launched
from, so every path a job holds must be absolute. These tests launch the installed
``marl`` command as a subprocess (it imports this working tree's ``marl``) against a clone
of this project, with relative sweep files, ``--out`` folders and ``config:`` files.
"""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

PROJECT = Path(__file__).resolve().parents[1]
_SCRIPT = Path(sys.executable).with_name("marl")
MARL = str(_SCRIPT) if _SCRIPT.exists() else (shutil.which("marl") or "marl")
"""The installed ``marl`` command: ``python -m marl.cli`` run inside the clone would import
the clone's ``marl`` instead of this working tree's."""
TINY = {"hpset": "ippo_tiny", "train.total_env_steps": 256, "train.log_every": 128,
        "train.checkpoint_every": 256, "train.progress": False, "run.tensorboard": False,
        "torch_threads": 1}
"""Two metric lines and one checkpoint per run."""


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), "-c", "user.name=test", "-c",
                           "user.email=test@example.com", *args], check=True,
                          capture_output=True, text=True).stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A clone of this project's HEAD plus an empty commit (so HEAD~1 is this HEAD)."""
    if not (PROJECT / ".git").exists():
        pytest.skip("needs the project's git repository (sweeps pin runs to git revisions)")
    clone = tmp_path / "repo"
    _git(PROJECT, "clone", "--quiet", str(PROJECT), str(clone))
    _git(clone, "commit", "--quiet", "--allow-empty", "-m", "later")
    return clone


def marl(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``marl ARGS`` in ``cwd`` (paths in ARGS are relative to it)."""
    return subprocess.run([MARL, *args], cwd=cwd, capture_output=True, text=True, check=False,
                          timeout=300)


def _write(path: Path, content: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(content))


def _finished(run_dir: Path) -> bool:
    """Trained to the end: both metric lines and a checkpoint."""
    metrics = run_dir / "metrics.jsonl"
    return (metrics.is_file() and metrics.read_text().count("\n") == 2
            and any((run_dir / "checkpoints").glob("*")))


def _job(out: Path, name: str) -> dict:
    return json.loads((out / "jobs" / f"{name}.json").read_text())


def test_relative_paths_from_three_directories_run_and_then_resume_the_sweep(
        repo: Path, tmp_path: Path) -> None:
    # The sweep lives outside the repository and starts from a config file next to it.
    _write(tmp_path / "sweeps" / "base.yaml", {"algo": {"gamma": 0.9}})
    _write(tmp_path / "sweeps" / "s.yaml", [{**TINY, "config": "base.yaml", "seed": [1, 2]}])
    label = _git(repo, "rev-parse", "HEAD")[:7]
    out = repo / "runs" / "x"
    # Seed 2's run directory is blocked by a file: that job fails, the sweep is half done.
    (out / label).mkdir(parents=True)
    (out / label / "seed_2").write_text("in the way\n")

    first = marl(repo, "sweep", "../sweeps/s.yaml", "--out", "runs/x", "--workers", "1")
    assert first.returncode == 1, first.stdout + first.stderr
    seed_1 = out / label / "seed_1"
    assert _finished(seed_1), first.stdout + (seed_1 / "train.log").read_text()
    assert f"1 of 2 runs failed: {label}__seed_2" in first.stderr
    assert yaml.safe_load((seed_1 / "config.yaml").read_text())["algo"]["gamma"] == 0.9
    job = _job(out, f"{label}__seed_1")
    for path in (job["run_dir"], job["repo"], job["config"]["run"]["dir"]):
        assert Path(path).is_absolute(), path
    assert job["status"] == "done" and _job(out, f"{label}__seed_2")["status"] == "failed"

    # Relaunched from a subfolder, `--out` spelt from there: only the failed run runs.
    (out / label / "seed_2").unlink()
    second = marl(repo / "envs", "sweep", "../../sweeps/s.yaml", "--out", "../runs/x")
    assert second.returncode == 0, second.stdout + second.stderr
    assert f"skip (done)  {label}__seed_1" in second.stdout
    assert "2 runs (1 to run)" in second.stdout
    assert _finished(out / label / "seed_2"), second.stdout
    assert (seed_1 / "train.log").read_text().count("=== ") == 1

    # From outside the repository: the repository named with --repo, nothing left to run.
    third = marl(tmp_path, "sweep", "sweeps/s.yaml", "--out", "repo/runs/x", "--repo", "repo")
    assert third.returncode == 0, third.stdout + third.stderr
    assert "2 runs (0 to run)" in third.stdout


def test_a_failed_run_makes_the_sweep_exit_non_zero_with_the_count_and_its_log(
        repo: Path, tmp_path: Path) -> None:
    _write(repo / "s.yaml", [{**TINY, "env.task": ["toy/coop_match", "no_such_module:make_env"]}])
    result = marl(repo, "sweep", "s.yaml", "--out", "runs/f", "--workers", "1")
    assert result.returncode == 1, result.stdout + result.stderr
    jobs = {path.stem: json.loads(path.read_text())
            for path in (repo / "runs" / "f" / "jobs").glob("*.json")}
    failed = [name for name, job in jobs.items() if job["status"] == "failed"]
    (done,) = [job for job in jobs.values() if job["status"] == "done"]
    assert len(failed) == 1 and "no_such_module" in failed[0]
    assert f"1 of 2 runs failed: {failed[0]}" in result.stderr
    log = Path(jobs[failed[0]]["run_dir"]) / "train.log"
    assert f"log: {log}" in result.stdout
    assert "cannot import module 'no_such_module'" in log.read_text()
    assert _finished(Path(done["run_dir"]))


def test_rev_with_a_relative_out_runs_that_commit(repo: Path) -> None:
    _write(repo / "s.yaml", [TINY])
    earlier = _git(repo, "rev-parse", "HEAD~1")
    result = marl(repo, "sweep", "s.yaml", "--rev", "HEAD~1", "--out", "runs/r")
    assert result.returncode == 0, result.stdout + result.stderr
    run_dir = repo / "runs" / "r" / earlier[:7] / "seed_1"
    assert _finished(run_dir), result.stdout
    assert json.loads((run_dir / "run.json").read_text())["revision"] == earlier
    checkout = repo / "runs" / "r" / "checkouts" / earlier[:12]
    assert _git(checkout, "rev-parse", "HEAD") == earlier


def test_a_missing_sweep_file_is_one_line_naming_the_directory(tmp_path: Path) -> None:
    result = marl(tmp_path, "sweep", "nope.yaml", "--dry-run")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert f"sweep file {(tmp_path / 'nope.yaml').resolve()} does not exist" in result.stderr
