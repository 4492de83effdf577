"""Process settings (marl/host.py): the retained heap saves the page faults of large blocks.

Each case runs in a fresh interpreter, since ``mallopt`` changes the whole process.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

FAULTS = """
import json, resource, sys, torch
from marl.config import load
from marl.host import configure_process, retain_freed_memory
from marl.trainer import train
overrides = {"train.retain_memory": sys.argv[1], "torch_threads": "1"}
if len(sys.argv) > 2:  # a short run: `marl train` applies the settings itself
    train(load(overrides={**overrides, "hpset": "ippo_tiny", "train.total_env_steps": "256",
                          "run.dir": sys.argv[2], "run.tensorboard": "false",
                          "train.progress": "false", "train.eval_every": "0"}))
else:
    configure_process(load(overrides=overrides))
for _ in range(2):  # the first blocks fault in whatever the settings
    torch.empty(16 * 2**20).fill_(1.0)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):  # 64 MiB a block, over glibc's largest mmap threshold
    torch.empty(16 * 2**20).fill_(1.0)
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
print(json.dumps({"faults": faults, "threads": torch.get_num_threads(),
                  "again": retain_freed_memory() if sys.argv[1] == "true" else None}))
"""


def _faults(retain: str, *run_dir: Path) -> dict[str, int]:
    out = subprocess.run([sys.executable, "-c", FAULTS, retain, *map(str, run_dir)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc settings")
@pytest.mark.parametrize("through", ["configure_process", "train"])
def test_retained_heap_reuses_large_blocks_without_page_faults(through: str,
                                                               tmp_path: Path) -> None:
    pages = 64 * 2**20 // 4096
    dirs = ([tmp_path / "default"], [tmp_path / "retained"]) if through == "train" else ([], [])
    default = _faults("false", *dirs[0])
    retained = _faults("true", *dirs[1])
    # Without it every 64 MiB block is a fresh mmap: a fault per page, ten times.
    assert default["faults"] > 5 * pages
    # With it the freed block is reused: next to no faults.
    assert retained["faults"] < pages // 10
    assert retained["again"] is True  # a second call keeps it in force
    assert default["threads"] == retained["threads"] == 1


def test_retain_memory_is_a_checked_boolean() -> None:
    from marl.config import ConfigError, load

    assert load().train.retain_memory is True
    assert load(overrides={"train.retain_memory": "false"}).train.retain_memory is False
    with pytest.raises(ConfigError, match="retain_memory"):
        load(overrides={"train.retain_memory": "sometimes"})
