"""Git helpers: the revision a sweep runs, dirty-tree checks, and clean checkouts of a revision.

A job runs in a checkout of its own revision (plus the recorded diff of a dirty launch),
never in the working tree, so editing the code while a sweep runs cannot change what the
sweep runs.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path


class GitError(RuntimeError):
    """A git operation a sweep needs failed; the message says what to do."""


def _git(repo: Path, *args: str, input_text: str | None = None,
         env: dict[str, str] | None = None) -> str:
    result = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True,
                            input=input_text, check=False, env=env)
    if result.returncode != 0:
        raise GitError(f"`git {' '.join(args)}` failed in {repo}: {result.stderr.strip()}")
    return result.stdout


def repo_root(start: Path) -> Path:
    """The top of the git repository holding ``start``."""
    try:
        return Path(_git(start, "rev-parse", "--show-toplevel").strip())
    except GitError as error:
        raise GitError(f"{start} is not inside a git repository; sweeps pin every run to a git "
                       "revision, so run `marl sweep` from inside the repository whose code the "
                       "runs should use, or pass --repo DIR") from error


def resolve_revision(repo: Path, rev: str = "HEAD") -> str:
    """The full commit hash ``rev`` names."""
    try:
        return _git(repo, "rev-parse", "--verify", f"{rev}^{{commit}}").strip()
    except GitError as error:
        raise GitError(f"{rev!r} is not a commit of {repo}; pass --rev with a commit hash, tag "
                       "or branch (`git log --oneline` lists them)") from error


def tracked_diff(repo: Path) -> str:
    """``git diff HEAD``: uncommitted changes to tracked files ('' for a clean tree)."""
    return _git(repo, "diff", "HEAD", "--binary")


def working_diff(repo: Path) -> str:
    """Every uncommitted change as one patch against HEAD: changes to tracked files and the
    new files git does not ignore (a new module the changed code imports must travel with
    it).

    Built in a temporary index, so the repository's own index (what the user staged) is
    left alone.
    """
    with tempfile.TemporaryDirectory() as scratch:
        env = {**os.environ, "GIT_INDEX_FILE": str(Path(scratch) / "index")}
        _git(repo, "read-tree", "HEAD", env=env)
        _git(repo, "add", "--all", env=env)
        return _git(repo, "diff", "--cached", "HEAD", "--binary", env=env)


def checkout(repo: Path, revision: str, diff: str, cache: Path) -> Path:
    """A clean checkout of ``revision`` with ``diff`` applied, made once and then reused.

    Checkouts are ``git clone --shared`` copies in ``cache``, keyed by revision and diff,
    and carry a ``.marl_path/marl_envs`` link so that :func:`job_environment` can point
    both ``marl`` and ``marl_envs`` at the checkout instead of the installed project.
    ``cache`` may be relative (to the current directory); the checkout returned is absolute,
    since jobs run in it and git would read a relative path against ``repo``.
    """
    repo, cache = repo.resolve(), cache.resolve()
    key = revision[:12] + (f"-{hashlib.sha256(diff.encode()).hexdigest()[:8]}" if diff else "")
    target = cache / key
    if (target / ".marl_ready").exists():
        return target
    staging = cache / f".{key}.{uuid.uuid4().hex}.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    staging.parent.mkdir(parents=True, exist_ok=True)
    _git(repo, "clone", "--quiet", "--shared", "--no-checkout", str(repo), str(staging))
    _git(staging, "checkout", "--quiet", "--detach", revision)
    if diff:
        _git(staging, "apply", "--whitespace=nowarn", "-", input_text=diff)
    link_dir = staging / ".marl_path"
    link_dir.mkdir()
    (link_dir / "marl_envs").symlink_to(Path("..") / "envs")
    (staging / ".marl_ready").write_text(revision + "\n")
    try:
        staging.rename(target)
    except OSError:  # another process finished the same checkout first
        shutil.rmtree(staging, ignore_errors=True)
    return target


def job_environment(checkout_dir: Path, base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment variables that make ``python -m marl.cli`` import the checkout's code.

    ``PYTHONPATH`` entries come before the editable install's import hook, so the
    checkout's ``marl`` and (through the link) ``marl_envs`` win.
    """
    env = dict(os.environ if base is None else base)
    checkout_dir = checkout_dir.resolve()  # the job runs inside it: a relative path would miss
    paths = [str(checkout_dir / ".marl_path"), str(checkout_dir)]
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env["PYTHONNOUSERSITE"] = "1"
    return env
