"""The README's Experiments section: its sweep file is the shipped one, its commands run.

The commands are taken from the section's ``bash`` blocks and run as written, one after the
other, from the root of a fresh clone of this project (whose sweep files are this working
tree's). A block that opens with ``# Long-running`` is run with ``--dry-run`` added. A
quoted string in a command's comment (``# list the runs: "4 runs"``) must appear in what
the command prints.
"""

import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

PROJECT = Path(__file__).resolve().parents[1]
_SCRIPT = Path(sys.executable).with_name("marl")
MARL = str(_SCRIPT) if _SCRIPT.exists() else (shutil.which("marl") or "marl")
"""The installed ``marl`` command, which imports this working tree's ``marl``."""
LONG_RUNNING = "# Long-running"


def _section(text: str, title: str) -> str:
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end != -1 else len(text)]


def _blocks(section: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", section, flags=re.DOTALL)


def _commands(block: str) -> list[tuple[str, list[str]]]:
    """``(command, quoted strings of its comment)`` for every command line of a block."""
    commands = []
    for line in block.splitlines():
        command, _, comment = line.partition("#")
        if command.strip():
            commands.append((command.strip(), re.findall(r'"([^"]+)"', comment)))
    return commands


SECTION = _section((PROJECT / "README.md").read_text(), "Experiments")


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), "-c", "user.name=test", "-c",
                    "user.email=test@example.com", *args], check=True, capture_output=True)


@pytest.fixture
def clone(tmp_path: Path) -> Path:
    """A clone of this project's HEAD, with this working tree's sweep files committed."""
    if not (PROJECT / ".git").exists():
        pytest.skip("needs the project's git repository (sweeps pin runs to git revisions)")
    clone = tmp_path / "marlshare"
    _git(PROJECT, "clone", "--quiet", str(PROJECT), str(clone))
    shutil.copytree(PROJECT / "benchmarks" / "sweeps", clone / "benchmarks" / "sweeps",
                    dirs_exist_ok=True)
    _git(clone, "add", "benchmarks/sweeps")
    _git(clone, "commit", "--quiet", "--allow-empty", "-m", "the working tree's sweep files")
    return clone


def test_the_readme_sweep_file_is_the_shipped_one() -> None:
    (block,) = _blocks(SECTION, "yaml")
    path = re.match(r"# (\S+\.yaml):", block)
    assert path is not None, "the YAML block opens with `# <path of the sweep file>:`"
    assert yaml.safe_load(block) == yaml.safe_load((PROJECT / path[1]).read_text())


def test_the_readme_experiment_commands_run_from_the_repository_root(clone: Path) -> None:
    ran, dry = [], []
    for block in _blocks(SECTION, "bash"):
        long_running = block.startswith(LONG_RUNNING)
        for command, expected in _commands(block):
            words = shlex.split(command)
            assert words[0] == "marl", f"not a marl command: {command}"
            words[0] = MARL
            if long_running:
                assert words[1] == "sweep", f"only sweeps have --dry-run: {command}"
                words.append("--dry-run")
            result = subprocess.run(words, cwd=clone, capture_output=True, text=True,
                                    check=False, timeout=300)
            printed = result.stdout + result.stderr
            assert result.returncode == 0, f"{command}\n{printed}"
            for text in expected:
                assert text in printed, f"{command}: {text!r} not in\n{printed}"
            (dry if long_running or "--dry-run" in words else ran).append(words)
    assert len(ran) >= 2 and len(dry) >= 2, "the section lost its commands"
    # What ran left finished runs and a report; what was only listed left nothing.
    for words in ran + dry:
        if words[1] == "sweep" and "--out" in words:
            out = clone / words[words.index("--out") + 1]
            if words in dry:
                assert not out.exists(), out
            else:
                jobs = [json.loads(path.read_text()) for path in out.glob("jobs/*.json")]
                assert jobs and all(job["status"] == "done" for job in jobs), out
                for job in jobs:
                    assert any((Path(job["run_dir"]) / "checkpoints").glob("*")), job["run_dir"]
        if words[1] == "report":
            assert (clone / words[2] / "report" / "report.md").stat().st_size > 0
