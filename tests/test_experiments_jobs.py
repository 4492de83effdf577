"""Jobs pinned to a revision, crash isolation, resume, GPU slots, the Ray executor.

The repository fixture is a clone of this project with one extra commit: importing
``marl`` appends a line naming the code's revision (``committed`` or ``working-tree``)
and the files ``marl`` and ``marl_envs`` came from to ``$MARL_TEST_MARKER``.
"""

import contextlib
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from marl.cli import main
from marl.experiments import executors, git, jobs, runner

PROJECT = Path(__file__).resolve().parents[1]
TINY = {"hpset": "ippo_tiny", "train.total_env_steps": 256, "train.log_every": 128,
        "train.checkpoint_every": 256, "train.progress": False, "run.tensorboard": False}
MARKER = """
import os as _os
if _os.environ.get("MARL_TEST_MARKER"):
    import marl_envs as _envs
    with open(_os.environ["MARL_TEST_MARKER"], "a") as _stream:
        _stream.write(f"{TAG} {__file__} {_envs.__file__}\\n")
"""


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), "-c", "user.name=test", "-c",
                           "user.email=test@example.com", *args], check=True,
                          capture_output=True, text=True).stdout


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A clone of this project's HEAD plus a commit that adds the import marker."""
    if not (PROJECT / ".git").exists():
        pytest.skip("needs the project's git repository (sweeps pin runs to git revisions)")
    clone = tmp_path / "repo"
    _git(PROJECT, "clone", "--quiet", str(PROJECT), str(clone))
    init = clone / "marl" / "__init__.py"
    init.write_text(init.read_text() + MARKER.replace("{TAG}", "committed"))
    _git(clone, "commit", "--quiet", "-am", "marker")
    monkeypatch.setenv("MARL_TEST_MARKER", str(tmp_path / "marker.txt"))
    return clone


def _sweep(path: Path, blocks: list[dict[str, object]]) -> Path:
    path.write_text(yaml.safe_dump(blocks))
    return path


def _edit_working_tree(repo: Path) -> None:
    init = repo / "marl" / "__init__.py"
    init.write_text(init.read_text().replace("committed", "working-tree"))


def test_a_dirty_launch_carries_new_files_and_leaves_the_index_alone(
        repo: Path, tmp_path: Path) -> None:
    """A new module the edited code imports travels with the diff; what the user staged
    stays staged, and nothing else gets staged."""
    (repo / "marl" / "extra.py").write_text("TAG = 'new-file'\n")
    init = repo / "marl" / "__init__.py"
    init.write_text(init.read_text() + "\nfrom marl.extra import TAG\n")
    _git(repo, "add", "marl/__init__.py")
    staged = _git(repo, "diff", "--cached", "--name-only")
    (job,) = runner.plan(_sweep(tmp_path / "s.yaml", [TINY]), tmp_path / "out", repo,
                         allow_dirty=True).jobs
    assert "marl/extra.py" in job.diff
    assert _git(repo, "diff", "--cached", "--name-only") == staged
    checkout_dir, _ = jobs.prepare(tmp_path / "out", job)
    result = subprocess.run([sys.executable, "-c", "import marl; print(marl.TAG)"],
                            cwd=checkout_dir, env=git.job_environment(checkout_dir),
                            capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "new-file"


def test_job_runs_the_pinned_revision_while_the_tree_changes(repo: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    plan = runner.plan(_sweep(tmp_path / "s.yaml", [TINY]), out, repo)
    _edit_working_tree(repo)  # after launch, before the job starts
    executors.LocalExecutor(workers=1).run(out, plan.jobs)
    (job,) = plan.jobs
    assert job.status == "done", job.log_tail
    tag, marl_file, envs_file = (tmp_path / "marker.txt").read_text().split()
    checkouts = str((out / "checkouts").resolve())
    assert tag == "committed"
    assert marl_file.startswith(checkouts) and envs_file.startswith(checkouts)
    run_dir = Path(job.run_dir)
    assert run_dir == (out / job.descriptor / "seed_1").resolve()
    assert json.loads((run_dir / "run.json").read_text())["revision"] == job.revision
    assert (run_dir / "metrics.jsonl").read_text().count("\n") == 2
    saved = jobs.load_job(out / "jobs" / f"{job.name}.json")
    assert saved.status == "done" and saved.revision == _git(repo, "rev-parse", "HEAD").strip()


def test_dirty_tree_is_refused_unless_allowed_then_the_diff_runs(
        repo: Path, tmp_path: Path) -> None:
    sweep = _sweep(tmp_path / "s.yaml", [TINY])
    _edit_working_tree(repo)
    with pytest.raises(runner.DirtyTreeError, match="marl/__init__.py.*--allow-dirty"):
        runner.plan(sweep, tmp_path / "out", repo)
    (job,) = runner.plan(sweep, tmp_path / "out", repo, allow_dirty=True).jobs
    assert "working-tree" in job.diff and "-dirty" in job.descriptor
    checkout_dir, _ = jobs.prepare(tmp_path / "out", job)
    subprocess.run([sys.executable, "-c", "import marl"], cwd=checkout_dir, check=True,
                   env=git.job_environment(checkout_dir))
    assert (tmp_path / "marker.txt").read_text().startswith("working-tree ")
    (pinned,) = runner.plan(sweep, tmp_path / "out", repo, rev="HEAD~1").jobs
    assert pinned.diff == "" and pinned.revision == _git(repo, "rev-parse", "HEAD~1").strip()


def test_crash_is_isolated_and_a_relaunch_reruns_only_what_failed(
        repo: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    sweep = _sweep(tmp_path / "s.yaml",
                   [{**TINY, "env.task": ["toy/coop_match", "no_such_module:make_env"]}])
    plan = runner.plan(sweep, out, repo)
    runner.enqueue(out, plan.to_run)
    executors.LocalExecutor(workers=1).run(out, plan.jobs)
    good, bad = plan.jobs
    assert good.status == "done" and bad.status == "failed"
    assert bad.returncode != 0 and "no_such_module" in bad.log_tail
    assert "failed: " + bad.name in runner.summary(plan.jobs, out)

    again = runner.plan(sweep, out, repo)
    assert [job.name for job in again.to_run] == [bad.name]
    executors.LocalExecutor(workers=1).run(out, again.to_run)
    assert jobs.load_jobs(out)[bad.name].attempts == 2
    assert (Path(good.run_dir) / "train.log").read_text().count("=== ") == 1


def test_sweep_command_dry_run_counts_runs(repo: Path, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    sweep = _sweep(tmp_path / "s.yaml", [{"hpset": "ippo_mpe",
                                          "groups.sharing": ["shared", "independent"],
                                          "optim.lr": [0.0003, 0.001], "repeat": 3}])
    monkeypatch.chdir(repo)
    assert main(["sweep", str(sweep), "--dry-run", "--out", str(tmp_path / "out")]) == 0
    assert "12 runs" in capsys.readouterr().out
    assert not (tmp_path / "out").exists()


def test_gpu_slots_and_default_workers() -> None:
    assert executors.gpu_for_slot(0, []) is None
    assert [executors.gpu_for_slot(s, ["0", "1"]) for s in range(4)] == ["0", "1", "0", "1"]
    assert [executors.gpu_for_slot(s, ["0", "1"], 2) for s in range(4)] == ["0", "0", "1", "1"]
    assert executors.default_workers(1, cores=8) == 8
    assert executors.default_workers(3, cores=8) == 2
    assert executors.default_workers(16, cores=8) == 1
    assert executors.default_workers(1, ["0", "1"], jobs_per_gpu=3, cores=8) == 6


@pytest.mark.skipif(importlib.util.find_spec("ray") is None,
                    reason="ray is not installed: pip install 'marlshare[ray]'")
def test_ray_sweep_with_a_relative_out_runs_the_jobs_and_counts_the_failed_one(
        repo: Path, tmp_path: Path) -> None:
    _sweep(repo / "s.yaml", [{**TINY, "env.task": ["toy/coop_match", "no_such_module:make_env"]}])
    # The installed `marl` script: `python -m marl.cli` would import the clone's older marl.
    script = shutil.which("marl")
    assert script is not None, "the `marl` command is not installed: pip install -e ."
    # Ray workers run in a directory of their own: a path relative to here would miss.
    result = subprocess.run([script, "sweep", "s.yaml", "--executor", "ray", "--out", "runs/ray",
                             "--cpus-per-job", "1"], cwd=repo, capture_output=True, text=True,
                            check=False, timeout=300)
    assert result.returncode == 1, result.stdout + result.stderr
    by_status: dict[str, list[jobs.Job]] = {}
    for job in jobs.load_jobs(repo / "runs" / "ray").values():
        by_status.setdefault(job.status, []).append(job)
    (done,), (failed,) = by_status["done"], by_status["failed"]
    assert (Path(done.run_dir) / "metrics.jsonl").read_text().count("\n") == 2, result.stdout
    assert "no_such_module" in failed.log_tail
    assert f"1 of 2 runs failed: {failed.name}" in result.stderr
    # Every job, the failed one too, imported the committed code of its checkout (Ray's
    # own workers import marl too, from elsewhere: they are not counted).
    checkouts = str((repo / "runs" / "ray" / "checkouts").resolve())
    imports = [line.split() for line in (tmp_path / "marker.txt").read_text().splitlines()]
    in_checkouts = [tag for tag, marl_file, _ in imports if marl_file.startswith(checkouts)]
    assert in_checkouts == ["committed"] * 2


def test_ctrl_c_stops_the_job_and_marks_it_interrupted(repo: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    sweep = _sweep(tmp_path / "s.yaml", [{**TINY, "train.total_env_steps": 10**9,
                                          "seed": [1, 2]}])
    # The installed `marl` script: `python -m marl.cli` would import the clone's older marl.
    script = shutil.which("marl")
    assert script is not None, "the `marl` command is not installed: pip install -e ."
    launcher = subprocess.Popen([script, "sweep", str(sweep),
                                 "--out", str(out), "--workers", "1"], cwd=repo,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not list(out.glob("*/seed_1/metrics.jsonl")):
            time.sleep(0.2)
        launcher.send_signal(signal.SIGINT)
        output, _ = launcher.communicate(timeout=60)
    finally:  # never leave the launcher or its job running, whatever failed above
        with contextlib.suppress(ProcessLookupError):
            os.killpg(launcher.pid, signal.SIGKILL)
    assert launcher.returncode == 130, output
    statuses = {job.seed: job.status for job in jobs.load_jobs(out).values()}
    assert statuses == {1: "interrupted", 2: "pending"}
    assert "launch the same sweep again" in output


def test_one_launcher_per_output_directory(tmp_path: Path) -> None:
    busy = pytest.raises(runner.SweepBusyError, match="--out")
    with runner.exclusive(tmp_path), busy, runner.exclusive(tmp_path):
        pass
    with runner.exclusive(tmp_path):  # released after use
        pass
