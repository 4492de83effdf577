"""Forward, and forward+backward+Adam, of N agents' networks under each backend.

    python -m benchmarks.backends [--quick] [--out DIR] [--n 2 8] [--batch 64]
                                  [--sizes 2x64 3x256 gru64 cnn entity] [--seq 25]
                                  [--threads 1]

For every network size (MLPs, GRU networks run over a sequence of ``--seq`` steps, and
the observation encoders: ``cnn`` on 7x7x3 images as in SISL pursuit, ``entity`` on 6 rows
of 7 features as the ``mpe_spread`` layout of Simple Spread, each followed by the 2x64
trunk),
agent count ``N`` and per-agent batch, each network kind runs in its
own fresh process (a used ``torch.jit.fork`` can slow later work in the same
process): ``loop``, ``fork`` and ``batched`` independent networks, and the
shared network with one-hot agent IDs. In that process, after a warm-up, a few timed
blocks of calls give the time per call in microseconds (median/min/max over blocks),
first for the forward pass alone, then for forward + backward + ``Adam.step()``. The
kinds of one configuration run back to back, so background load hits them alike.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import torch

from benchmarks.common import (
    add_output_arguments,
    emit,
    plot_vs_agents,
    run_fresh,
    summary,
    write_results,
)

MODULE = "benchmarks.backends"
KINDS = ("loop", "fork", "batched", "shared")
"""Independent networks under each backend, then one shared network with one-hot IDs."""
MODES = ("forward", "train")
SIZES = {"2x64": (64, 64), "3x256": (256, 256, 256)}
"""MLP hidden layers; input 18 and output 5 as in Simple Spread (3 agents)."""
GRU_SIZES = {"gru64": 64}
"""GRU networks by state size ``H``: one input layer of ``H``, a GRU of ``H``, a linear head
(EPyMARL's recurrent agent), called on a whole sequence ``[T, batch, N, 18]``."""
ENCODER_SIZES = {"cnn": (7, 7, 3), "entity": (6, 7)}
"""Encoder networks by name: one agent's observation shape (``encoder -> 2x64 MLP ->
head``); the network reads it flattened, ``[batch, N, prod(shape)]``, as learners store it.
Independent CNNs under ``batched`` are one grouped convolution over agents."""
IN_FEATURES, OUT_FEATURES = 18, 5


def in_features(size: str) -> int:
    """Flat input features per agent of network ``size``."""
    if size in ENCODER_SIZES:
        shape = ENCODER_SIZES[size]
        return shape[0] * shape[1] * (shape[2] if len(shape) > 2 else 1)
    return IN_FEATURES


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def time_blocks(call: Callable[[], object], device: torch.device, blocks: int,
                block_s: float, budget_s: float) -> dict[str, Any]:
    """Time ``call`` in ``blocks`` blocks after a warm-up; microseconds per call.

    The number of calls per block is calibrated so a block takes about ``block_s``; when
    one call is slow, fewer blocks run so the whole measurement stays near ``budget_s``
    (at least two blocks of one call each).
    """
    def sync() -> None:
        if device.type == "cuda":  # kernels are asynchronous: wait before reading clocks
            torch.cuda.synchronize(device)

    # At least three warm-up calls (TorchScript profiles the first runs of the fork
    # backend, then optimises), and more until a quarter of the budget has passed.
    warm_start, warm_calls = time.perf_counter(), 0
    while warm_calls < 3 or time.perf_counter() - warm_start < budget_s / 4:
        start = time.perf_counter()
        call()
        sync()
        one, warm_calls = time.perf_counter() - start, warm_calls + 1
    calls = max(1, int(block_s / max(one, 1e-9)))
    blocks = max(2, min(blocks, int(budget_s / max(one * calls, 1e-9))))
    per_call: list[float] = []
    for _ in range(blocks):
        sync()
        start = time.perf_counter()
        for _ in range(calls):
            call()
        sync()
        per_call.append((time.perf_counter() - start) / calls * 1e6)
    return {**summary(per_call), "calls_per_block": calls, "blocks": per_call}


def build(kind: str, num_agents: int, size: str) -> torch.nn.Module:
    from marl.nets import make_composed_group_net, make_group_net, make_recurrent_group_net

    sharing = "shared" if kind == "shared" else "independent"
    backend = "batched" if kind == "shared" else kind
    if size in ENCODER_SIZES:
        return make_composed_group_net(sharing, ENCODER_SIZES[size], OUT_FEATURES, num_agents,
                                       encoder=size, hidden=SIZES["2x64"], backend=backend)
    if size in GRU_SIZES:
        return make_recurrent_group_net(sharing, IN_FEATURES, OUT_FEATURES, num_agents,
                                        rnn_hidden=GRU_SIZES[size], backend=backend)
    return make_group_net(sharing, IN_FEATURES, OUT_FEATURES, num_agents, SIZES[size],
                          backend=backend)


def make_call(net: torch.nn.Module, size: str, num_agents: int, batch: int, seq: int,
              device: torch.device) -> Callable[[], torch.Tensor]:
    """The call to time: ``net`` on ``[batch, N, D]``, or for a GRU on a sequence
    ``[seq, batch, N, 18]`` from a zero state (an episode starting at step 0)."""
    if size not in GRU_SIZES:
        x = torch.randn(batch, num_agents, in_features(size), device=device)
        return lambda: net(x)
    obs = torch.randn(seq, batch, num_agents, IN_FEATURES, device=device)
    hidden = torch.zeros(batch, num_agents, GRU_SIZES[size], device=device)
    first = torch.zeros(seq, batch, num_agents, dtype=torch.bool, device=device)
    first[0] = True
    return lambda: net(obs, hidden, first)[0]


def _worker(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = pick_device(args.device)
    net = build(args.kind, args.n[0], args.sizes[0]).to(device)
    run_net = make_call(net, args.sizes[0], args.n[0], args.batch[0], args.seq, device)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-4)

    @torch.no_grad()
    def forward() -> object:
        return run_net()

    def train() -> object:
        optimizer.zero_grad(set_to_none=True)
        run_net().square().mean().backward()
        optimizer.step()
        return None

    result: dict[str, Any] = {"threads": torch.get_num_threads(),
                              "interop_threads": torch.get_num_interop_threads(),
                              "device": str(device)}
    for mode, call in (("forward", forward), ("train", train)):
        result[mode] = time_blocks(call, device, args.blocks, args.block_s, args.budget_s)
    emit(result)


def _table(rows: list[dict[str, Any]], size: str, mode: str, seq: int) -> list[str]:
    net = (f"GRU over {seq} steps" if size in GRU_SIZES else
           f"encoder on {'x'.join(map(str, ENCODER_SIZES[size]))} + MLP 2x64"
           if size in ENCODER_SIZES else "MLP")
    lines = [f"### {size} {net}, {mode}{' + backward + Adam' if mode == 'train' else ''} "
             "(us per call, median over blocks)", "",
             "| N | batch/agent | " + " | ".join(KINDS) + " | fork / loop | fastest |",
             "|---|---|" + "---|" * (len(KINDS) + 2)]
    keys = sorted({(r["n"], r["batch"]) for r in rows if r["size"] == size})
    for n, batch in keys:
        cells = {r["kind"]: r[mode]["median"] for r in rows
                 if (r["size"], r["n"], r["batch"]) == (size, n, batch)}
        fork_loop = (f"{cells['fork'] / cells['loop']:.2f}"
                     if "fork" in cells and "loop" in cells else "-")
        fastest = min(cells, key=cells.__getitem__) if cells else "-"
        lines.append(f"| {n} | {batch} | "
                     + " | ".join(f"{cells[k]:,.0f}" if k in cells else "-" for k in KINDS)
                     + f" | {fork_loop} | {fastest} |")
    return [*lines, ""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, nargs="+", default=[2, 4, 8, 16, 32, 64])
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 64, 1024])
    parser.add_argument("--sizes", nargs="+", choices=[*SIZES, *GRU_SIZES, *ENCODER_SIZES],
                        default=[*SIZES, *GRU_SIZES, *ENCODER_SIZES])
    parser.add_argument("--seq", type=int, default=25,
                        help="time steps of a GRU call (25: an MPE episode)")
    parser.add_argument("--kinds", nargs="+", choices=KINDS, default=list(KINDS))
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    parser.add_argument("--device", default="auto", help="'cpu', 'cuda' or 'auto'")
    parser.add_argument("--blocks", type=int, default=5, help="timed blocks per mode")
    parser.add_argument("--block-s", type=float, default=0.05, help="target seconds a block")
    parser.add_argument("--budget-s", type=float, default=0.3,
                        help="cap on timed seconds per mode and configuration")
    add_output_arguments(parser, "backends", "tiny grid, for tests", KINDS)
    args = parser.parse_args()
    if args.worker:
        _worker(args)
        return
    if args.quick:
        args.n, args.batch, args.sizes, args.seq = [2], [4], ["2x64", "gru64", "cnn"], 4
        args.blocks, args.block_s, args.budget_s = 2, 0.005, 0.05
    rows: list[dict[str, Any]] = []
    for size in args.sizes:
        for n in args.n:
            for batch in args.batch:
                for kind in args.kinds:  # back to back, so background load hits all alike
                    flags = ["--kind", kind, "--n", str(n), "--batch", str(batch), "--sizes",
                             size, "--seq", str(args.seq), "--threads", str(args.threads),
                             "--device", args.device,
                             "--blocks", str(args.blocks), "--block-s", str(args.block_s),
                             "--budget-s", str(args.budget_s)]
                    measured = run_fresh(MODULE, flags)
                    seq = args.seq if size in GRU_SIZES else None
                    rows.append({"kind": kind, "size": size, "n": n, "batch": batch,
                                 "seq": seq, **measured})
                print(f"{size} N={n} batch={batch}: " + ", ".join(
                    f"{r['kind']} {r['forward']['median']:,.0f}/{r['train']['median']:,.0f}us"
                    for r in rows[-len(args.kinds):]), flush=True)
                _report(args, rows, plot=False)  # partial results survive an interrupted run
    table = _report(args, rows, plot=True)
    print(table)
    print(f"wrote {args.out / 'results.json'}, results.md and backends.png")


def _report(args: argparse.Namespace, rows: list[dict[str, Any]], plot: bool) -> str:
    """Write results.json and results.md (and the plot) for the rows measured so far."""
    lines = [f"torch threads {args.threads}, device {rows[0]['device']}; input 18 (encoders: "
             "the flattened observation) -> output 5; batch is per agent (the shared net "
             f"sees N x batch rows); a GRU call runs {args.seq} steps of that batch.", ""]
    panels: dict[str, dict[str, list[tuple[int, float]]]] = {}
    for size in args.sizes:
        for mode in MODES:
            lines += _table(rows, size, mode, args.seq)
            for batch in args.batch:
                panels[f"{size} {mode} batch {batch}"] = {
                    kind: [(r["n"], r[mode]["median"]) for r in rows
                           if (r["kind"], r["size"], r["batch"]) == (kind, size, batch)]
                    for kind in args.kinds}
    table = "\n".join(lines)
    write_results(args.out, "backends", rows, table,
                  {"threads": args.threads, "unit": "microseconds per call",
                   "in_features": IN_FEATURES, "out_features": OUT_FEATURES,
                   "sizes": {s: list(SIZES[s]) if s in SIZES else [GRU_SIZES[s]]
                             for s in args.sizes if s not in ENCODER_SIZES},
                   "encoders": {s: {"obs_shape": list(ENCODER_SIZES[s]),
                                    "hidden": list(SIZES["2x64"])}
                                for s in args.sizes if s in ENCODER_SIZES},
                   "recurrent": {s: {"rnn_hidden": GRU_SIZES[s], "seq": args.seq}
                                 for s in args.sizes if s in GRU_SIZES},
                   "complete": plot})
    if plot:
        plot_vs_agents(args.out / "backends.png", panels, "us per call",
                       columns=max(1, len(args.batch)))
    return table


if __name__ == "__main__":
    main()
