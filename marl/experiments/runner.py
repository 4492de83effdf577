"""From a sweep file to job files: pin the runs to a revision, name them, merge with a queue."""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from marl.config import ConfigError, to_dict
from marl.experiments import git
from marl.experiments.jobs import Job, load_jobs, save
from marl.experiments.sweep import (
    descriptor,
    expand,
    load_sweep,
    revision_label,
    varying_keys,
)


class DirtyTreeError(RuntimeError):
    """The working tree has uncommitted changes and ``--allow-dirty`` was not given."""


class SweepBusyError(RuntimeError):
    """Another launcher holds the sweep's output directory."""


@dataclasses.dataclass
class Plan:
    """The jobs of a sweep: those to run now and those already done."""

    revision: str
    jobs: list[Job]

    @property
    def to_run(self) -> list[Job]:
        return [job for job in self.jobs if job.status != "done"]


def pin_revision(repo: Path, rev: str | None, allow_dirty: bool) -> tuple[str, str]:
    """The commit and the diff the jobs run.

    With ``rev`` the commit is run as committed. Without it, HEAD runs; uncommitted changes
    to tracked files are refused unless ``allow_dirty``, which records them as a diff
    together with the new files git does not ignore (:func:`~marl.experiments.git.working_diff`).
    """
    if rev is not None:
        return git.resolve_revision(repo, rev), ""
    revision = git.resolve_revision(repo, "HEAD")
    diff = git.tracked_diff(repo)
    if diff and not allow_dirty:
        changed = [line[len("diff --git a/"):].split(" b/")[0]
                   for line in diff.splitlines() if line.startswith("diff --git a/")]
        raise DirtyTreeError(
            f"the working tree of {repo} has uncommitted changes to {', '.join(changed)}; a "
            f"sweep runs a fixed revision. Commit them (then the sweep runs the new commit), or "
            f"pass --allow-dirty to record the diff with each job and apply it to a clean "
            f"checkout of {revision[:7]}")
    return revision, git.working_diff(repo) if allow_dirty else diff


def plan(sweep_file: Path, out: Path, repo: Path, rev: str | None = None,
         allow_dirty: bool = False) -> Plan:
    """Expand ``sweep_file`` into jobs under ``out``; nothing is written.

    A job already ``done`` is kept as it is (and skipped); any other existing job is
    replaced by a fresh ``pending`` one that keeps its attempt count. Relative paths are
    read from the current directory; every path a job holds is absolute, since jobs run
    in their checkout (and on Ray, in a worker's own directory).
    """
    out = out.resolve()
    runs = expand(load_sweep(sweep_file.resolve()))
    repo = git.repo_root(repo.resolve())
    revision, diff = pin_revision(repo, rev, allow_dirty)
    keys = varying_keys(runs)
    label = revision_label(revision, diff)
    existing = load_jobs(out)
    jobs: dict[str, Job] = {}
    for run in runs:
        name = descriptor(label, run, keys)
        run_dir = out / name / f"seed_{run.seed}"
        config = to_dict(run.config)
        config["run"] = {**config["run"], "dir": str(run_dir)}
        job = Job(descriptor=name, seed=run.seed, revision=revision, repo=str(repo),
                  config=config, run_dir=str(run_dir), diff=diff)
        if job.name in jobs:
            raise ConfigError(
                f"two runs of the sweep are both {job.name} (block {run.block + 1} repeats an "
                "earlier run); give them different keys or seeds")
        old = existing.get(job.name)
        if old is not None and old.status == "done":
            job = old
        elif old is not None:
            job.attempts = old.attempts
        jobs[job.name] = job
    return Plan(revision, list(jobs.values()))


def enqueue(out: Path, jobs: list[Job]) -> None:
    """Write the job files of ``jobs`` that still have to run (their status: pending)."""
    for job in jobs:
        if job.status != "done":
            job.status = "pending"
            save(out, job)


@contextlib.contextmanager
def exclusive(out: Path) -> Iterator[None]:
    """Hold ``out/.sweep.lock`` so that two launchers never run the same jobs at once."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / ".sweep.lock"
    with path.open("a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as error:
            handle.seek(0)
            raise SweepBusyError(
                f"another `marl sweep` (pid {handle.read().strip() or '?'}) is running jobs in "
                f"{out}; wait for it, stop it with Ctrl-C, or pass another --out") from error
        handle.truncate(0)
        handle.write(str(os.getpid()))
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def summary(jobs: list[Job], out: Path) -> str:
    """Two lines per job that did not finish (its last log line, its log), then the counts."""
    lines = []
    for job in jobs:
        if job.status in ("failed", "interrupted"):
            last = job.log_tail.strip().splitlines()[-1:] or [""]
            lines.append(f"{job.status}: {job.name} (exit {job.returncode}): {last[0]}")
            log = Path(job.run_dir) / "train.log"
            lines.append(f"  log: {log}" if log.is_file()
                         else "  no log: it failed before training started (the line above)")
    counts = {status: sum(job.status == status for job in jobs)
              for status in ("done", "failed", "interrupted", "pending")}
    lines.append(", ".join(f"{n} {status}" for status, n in counts.items() if n)
                 + f"; job files in {out / 'jobs'}")
    return "\n".join(lines)


def failure_line(jobs: list[Job]) -> str | None:
    """``2 of 12 runs failed: ...`` naming the failed runs, or None when none failed."""
    failed = [job.name for job in jobs if job.status == "failed"]
    if not failed:
        return None
    return (f"{len(failed)} of {len(jobs)} runs failed: {', '.join(failed)}; each one's log is "
            "train.log in its run directory (listed above). Fix the cause and launch the same "
            "sweep again: it runs only what did not finish")
