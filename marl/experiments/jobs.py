"""Jobs: one run of a sweep pinned to a git revision, stored as a JSON file in a queue.

Layout of a sweep's output directory::

    <out>/jobs/<descriptor>__seed_<k>.json    the job: revision, config, seed, status
    <out>/<descriptor>/seed_<k>/              the run directory (config.yaml, metrics.jsonl,
                                              run.json, train.log, checkpoints/, events)
    <out>/checkouts/<revision>[-<diff>]/      clean checkouts the jobs run in

Statuses: ``pending`` -> ``running`` -> ``done`` | ``failed`` | ``interrupted``. Launching
a sweep again skips ``done`` jobs and runs every other one again.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from marl.atomic import atomic_write_text
from marl.experiments import git

STATUSES = ("pending", "running", "done", "failed", "interrupted")
LOG_TAIL_LINES = 40


@dataclasses.dataclass
class Job:
    """One run of a sweep. ``config`` is the full resolved config as a nested dict.

    ``repo``, ``run_dir`` and ``config['run']['dir']`` are absolute paths: the job runs in
    a checkout elsewhere, possibly launched again from another directory.
    """

    descriptor: str
    seed: int
    revision: str
    repo: str
    config: dict[str, Any]
    run_dir: str
    diff: str = ""
    status: str = "pending"
    returncode: int | None = None
    log_tail: str = ""
    started: float | None = None
    finished: float | None = None
    attempts: int = 0

    @property
    def name(self) -> str:
        return f"{self.descriptor}__seed_{self.seed}"


def job_path(out: Path, job: Job) -> Path:
    return out / "jobs" / f"{job.name}.json"


def save(out: Path, job: Job) -> None:
    """Write the job file atomically (a crash never leaves half a job behind)."""
    atomic_write_text(job_path(out, job), json.dumps(dataclasses.asdict(job), indent=2) + "\n")


def load_job(path: Path) -> Job:
    return Job(**json.loads(path.read_text()))


def load_jobs(out: Path) -> dict[str, Job]:
    """Every job in ``out/jobs`` by name."""
    folder = out / "jobs"
    jobs = [load_job(p) for p in sorted(folder.glob("*.json"))] if folder.is_dir() else []
    return {job.name: job for job in jobs}


def command(job: Job, config_path: Path, threads: int) -> list[str]:
    """The training command: the checkout's own ``marl.cli``, resuming a checkpoint if any.

    Every path in it is absolute, since the command runs in the checkout.
    """
    return [sys.executable, "-m", "marl.cli", "train", "--config", str(config_path.resolve()),
            f"run.dir={Path(job.run_dir).resolve()}", "run.resume=true",
            f"torch_threads={threads}"]


def prepare(out: Path, job: Job) -> tuple[Path, Path]:
    """Check out the job's revision and write its config and ``run.json``; return both paths.

    A run that never wrote a checkpoint starts over, so its stale metrics and event
    files are dropped; one that did resumes from its last checkpoint. Both paths are
    absolute: the job runs in its checkout, not in the directory the sweep was launched from.
    """
    out = out.resolve()
    checkout_dir = git.checkout(Path(job.repo), job.revision, job.diff, out / "checkouts")
    run_dir = Path(job.run_dir).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    if not any((run_dir / "checkpoints").glob("*")):
        stale = [run_dir / "metrics.jsonl", *run_dir.glob("events.out.tfevents.*")]
        for path in stale:
            path.unlink(missing_ok=True)
    config_path = out / "jobs" / f"{job.name}.config.yaml"
    atomic_write_text(config_path, yaml.safe_dump(job.config, sort_keys=False))
    info = {"descriptor": job.descriptor, "seed": job.seed, "revision": job.revision,
            "dirty": bool(job.diff)}
    atomic_write_text(run_dir / "run.json", json.dumps(info, indent=2) + "\n")
    return checkout_dir, config_path


def execute(out: Path, job: Job, threads: int, gpu: str | None,
            started: Callable[[subprocess.Popen[bytes]], None] | None = None) -> tuple[int, str]:
    """Run ``job`` to completion in its checkout; return the exit code and the log's tail.

    ``started`` receives the child process so a caller can terminate it on Ctrl-C.
    """
    checkout_dir, config_path = prepare(out, job)
    env = git.job_environment(checkout_dir)
    env["OMP_NUM_THREADS"] = str(threads)
    env["MKL_NUM_THREADS"] = str(threads)
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = gpu
    log_path = Path(job.run_dir).resolve() / "train.log"
    with log_path.open("ab") as log:
        log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} revision {job.revision}\n".encode())
        log.flush()
        process = subprocess.Popen(command(job, config_path, threads), cwd=checkout_dir, env=env,
                                   stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
        if started is not None:
            started(process)
        try:
            returncode = process.wait()
        except BaseException:  # Ctrl-C, or a cancelled Ray task: never leave the job running
            stop(process)
            raise
    return returncode, log_tail(log_path)


def stop(process: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    """Terminate a job process, and kill it if it has not exited after ``grace`` seconds."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """The last ``lines`` lines of a log file ('' if there is none)."""
    if not path.exists():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def finish(out: Path, job: Job, returncode: int, tail: str, interrupted: bool = False) -> None:
    """Record how a job ended."""
    job.returncode = returncode
    job.finished = time.time()
    if interrupted:
        job.status = "interrupted"
    else:
        job.status = "done" if returncode == 0 else "failed"
    job.log_tail = "" if job.status == "done" else tail
    save(out, job)
