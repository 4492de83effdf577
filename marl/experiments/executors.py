"""Executors: where a sweep's jobs run. ``local`` (a pool of processes) or ``ray`` (a cluster).

Both run the same :func:`marl.experiments.jobs.execute`: a ``marl train`` subprocess in
a clean checkout of the job's revision. A job that crashes is recorded as failed with its
log tail and the others carry on; Ctrl-C terminates the running jobs and marks them
``interrupted`` so the next launch of the sweep runs them again.
"""

from __future__ import annotations

import dataclasses
import os
import queue
import subprocess
import threading
import time
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

from marl.experiments.jobs import Job, execute, finish, save, stop


def job_threads(job: Job) -> int:
    """Torch threads a job uses: its ``torch_threads``, or 1 when unset."""
    threads = job.config.get("torch_threads")
    return int(threads) if threads else 1


def default_workers(threads_per_job: int, gpus: Sequence[str] = (), jobs_per_gpu: int = 1,
                    cores: int | None = None) -> int:
    """Jobs at once: ``jobs_per_gpu`` per GPU when there are GPUs, else cores // threads."""
    if gpus:
        return len(gpus) * jobs_per_gpu
    cores = cores or os.cpu_count() or 1
    return max(1, cores // max(1, threads_per_job))


def gpu_for_slot(slot: int, gpus: Sequence[str], jobs_per_gpu: int = 1) -> str | None:
    """The GPU (a ``CUDA_VISIBLE_DEVICES`` value) of worker ``slot``; None without GPUs.

    Slots ``0 .. jobs_per_gpu - 1`` share the first GPU, the next ``jobs_per_gpu`` the
    second, and so on; slots past the last GPU wrap around.
    """
    if not gpus:
        return None
    if jobs_per_gpu < 1:
        raise ValueError(f"jobs_per_gpu must be at least 1, got {jobs_per_gpu}")
    return gpus[(slot // jobs_per_gpu) % len(gpus)]


def visible_gpus() -> list[str]:
    """GPU ids this machine offers: ``CUDA_VISIBLE_DEVICES`` if set, else torch's count."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [gpu for gpu in listed.split(",") if gpu.strip() and gpu.strip() != "-1"]
    import torch

    return [str(index) for index in range(torch.cuda.device_count())]


class LocalExecutor:
    """A pool of ``workers`` job processes on this machine, each pinned to a worker slot."""

    def __init__(self, workers: int, gpus: Sequence[str] = (), jobs_per_gpu: int = 1) -> None:
        self.workers = workers
        self.gpus = list(gpus)
        self.jobs_per_gpu = jobs_per_gpu
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._processes: dict[str, subprocess.Popen[bytes]] = {}
        self._slots: queue.Queue[int] = queue.Queue()

    def run(self, out: Path, jobs: Sequence[Job]) -> None:
        """Run ``jobs``; on Ctrl-C stop them, mark them interrupted, and re-raise."""
        out = out.resolve()  # the worker threads must not depend on the current directory
        for slot in range(self.workers):
            self._slots.put(slot)
        pool = ThreadPoolExecutor(max_workers=self.workers)
        futures: list[Future[None]] = [pool.submit(self._run_one, out, job) for job in jobs]
        try:
            pending = set(futures)
            while pending:
                _, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
            for future in futures:
                future.result()
        except KeyboardInterrupt:
            with self._lock:  # together with `started`: no process can slip past the stop
                self._stopping.set()
                running = list(self._processes.values())
            for future in futures:
                future.cancel()
            for process in running:
                stop(process)
            raise
        finally:
            pool.shutdown(wait=True)

    def _run_one(self, out: Path, job: Job) -> None:
        if self._stopping.is_set():
            return
        slot = self._slots.get()
        try:
            job.status, job.started, job.attempts = "running", time.time(), job.attempts + 1
            save(out, job)

            def started(process: subprocess.Popen[bytes]) -> None:
                with self._lock:
                    self._processes[job.name] = process
                    stopping = self._stopping.is_set()
                if stopping:  # Ctrl-C came while this job was still being prepared
                    stop(process)

            try:
                returncode, tail = execute(out, job, job_threads(job),
                                           gpu_for_slot(slot, self.gpus, self.jobs_per_gpu),
                                           started)
            except Exception as error:  # a checkout or launch that failed: this job only
                returncode, tail = -1, f"{type(error).__name__}: {error}"
            finish(out, job, returncode, tail, interrupted=self._stopping.is_set())
        finally:
            with self._lock:
                self._processes.pop(job.name, None)
            self._slots.put(slot)


def _ray_task(out: str, job: dict[str, Any], threads: int) -> tuple[int, str]:
    """Runs on a Ray worker. Ray has set ``CUDA_VISIBLE_DEVICES`` for the task's GPUs."""
    return execute(Path(out), Job(**job), threads, gpu=None)


class RayExecutor:
    """Jobs as Ray tasks, each asking for ``cpus_per_job`` CPUs and ``gpus_per_job`` GPUs.

    Connects to ``address`` (``auto`` or ``ray://host:10001``) or starts a local Ray. On a
    cluster of several machines, the sweep's output directory and the repository must
    be on a filesystem that every node sees at the same path.
    """

    def __init__(self, address: str | None = None, cpus_per_job: float | None = None,
                 gpus_per_job: float = 0.0) -> None:
        self.address = address
        self.cpus_per_job = cpus_per_job
        self.gpus_per_job = gpus_per_job

    def run(self, out: Path, jobs: Sequence[Job]) -> None:
        """Submit every job, record results as they arrive; Ctrl-C cancels and re-raises."""
        import ray

        out = out.resolve()  # Ray workers do not run in the directory the sweep started in
        if not ray.is_initialized():
            if self.address:
                ray.init(address=self.address)
            else:
                ray.init(include_dashboard=False)
        remote = ray.remote(max_retries=0)(_ray_task)
        refs: dict[Any, Job] = {}
        for job in jobs:
            threads = job_threads(job)
            task = remote.options(num_cpus=self.cpus_per_job or threads,
                                  num_gpus=self.gpus_per_job)
            job.status, job.started, job.attempts = "running", time.time(), job.attempts + 1
            save(out, job)
            refs[task.remote(str(out), dataclasses.asdict(job), threads)] = job
        try:
            while refs:
                ready, _ = ray.wait(list(refs), num_returns=1)
                job = refs.pop(ready[0])
                try:
                    returncode, tail = ray.get(ready[0])
                except ray.exceptions.RayError as error:
                    returncode, tail = -1, str(error)[-4000:]
                finish(out, job, returncode, tail)
        except KeyboardInterrupt:
            for ref, job in refs.items():
                ray.cancel(ref)
                finish(out, job, -2, "interrupted by Ctrl-C", interrupted=True)
            raise
