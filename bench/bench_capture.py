"""Forward-time overhead of lrc_kernels.torch.capture on a small Mixtral-like model.

Runs batches of 8 x 512 random tokens through a randomly initialised Mixtral-architecture
model (no download) in pairs of blocks without and with capture (alternating order), and
reports the median per-pair overhead of wall and CPU time with its quartiles, the host
synchronisations made by the capture code on the forward thread, and device-to-host copies
per forward. The captured ids are checked against the
indices the experts received before any time is reported.

    python bench/bench_capture.py                      # the issue's setting, CPU
    python bench/bench_capture.py --quick              # CI: tiny sizes, correctness only
    python bench/bench_capture.py --device cuda        # on a GPU machine

Writes JSON (``--json``, default bench/results/capture.json), the same table as markdown beside
it, and prints the table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lrc_kernels._capture import _recorder  # noqa: E402
from lrc_kernels._capture._tiny import tiny_model  # noqa: E402
from lrc_kernels.torch import capture, find_moe_layers  # noqa: E402

PKG_DIR = str(Path(_recorder.__file__).resolve().parents[1])
SYNC_METHODS = ("cpu", "item", "tolist", "numpy", "__bool__", "__int__", "__float__",
                "__index__", "nonzero", "__array__")  # fmt: skip


class SyncCounter:
    """Count host-synchronising tensor calls made by lrc_kernels code on this thread."""

    def __init__(self) -> None:
        self.count = 0
        self._saved: list[tuple[str, object]] = []

    def __enter__(self) -> SyncCounter:
        main = threading.current_thread()
        for name in SYNC_METHODS:
            orig = getattr(torch.Tensor, name)
            self._saved.append((name, orig))

            def wrapped(*a, __orig=orig, **k):
                if threading.current_thread() is main and sys._getframe(
                    1
                ).f_code.co_filename.startswith(PKG_DIR):
                    self.count += 1
                return __orig(*a, **k)

            setattr(torch.Tensor, name, wrapped)
        return self

    def __exit__(self, *exc) -> None:
        for name, orig in self._saved:
            setattr(torch.Tensor, name, orig)


def build(args):
    return tiny_model(
        "mixtral",
        seed=0,
        hidden_size=args.hidden,
        intermediate_size=2 * args.hidden,
        num_hidden_layers=args.layers,
        num_attention_heads=8,
        num_key_value_heads=4,
        num_local_experts=args.experts,
        num_experts_per_tok=args.top_k,
        vocab_size=1024,
        max_position_embeddings=max(1024, args.seq),
    ).to(args.device)


def check_correct(model, batch) -> None:
    """Captured ids == the indices each experts module received (arg 1)."""
    seen: dict[int, torch.Tensor] = {}
    handles = []
    for i, s in enumerate(find_moe_layers(model)):
        handles.append(
            s.experts.register_forward_pre_hook(
                lambda m, a, i=i: seen.__setitem__(i, a[1].detach().cpu())
            )
        )
    try:
        with capture(model) as cap, torch.inference_mode():
            model(input_ids=batch, use_cache=False)
    finally:
        for h in handles:
            h.remove()
    tr = cap.trace()
    B, S = batch.shape
    assert tr.num_sequences == B and tr.num_tokens == B * S
    for i in range(tr.num_layers):
        np.testing.assert_array_equal(tr.experts[:, i, :], seen[i].numpy())


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--experts", type=int, default=8)
    ap.add_argument("--top-k", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=12, help="pairs of timed blocks")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--quick", action="store_true", help="tiny sizes, correctness only")
    ap.add_argument("--json", default=str(ROOT / "bench" / "results" / "capture.json"))
    args = ap.parse_args()
    if args.quick:
        args.batch, args.seq, args.hidden, args.layers, args.repeats = 2, 64, 64, 2, 2
    if args.threads:
        torch.set_num_threads(args.threads)

    model = build(args)
    g = torch.Generator().manual_seed(0)
    batch = torch.randint(0, 1024, (args.batch, args.seq), generator=g).to(args.device)
    check_correct(model, batch)

    cpu_base: list[float] = []

    def fwd(cpu_log=None):
        sync(args.device)
        c0 = time.process_time()  # CPU time of every thread of this process
        t = time.perf_counter()
        model(input_ids=batch, use_cache=False)
        sync(args.device)
        wall = time.perf_counter() - t
        if cpu_log is not None:
            cpu_log.append(time.process_time() - c0)
        return wall

    with torch.inference_mode():
        for _ in range(3):  # warm-up (allocator, kernels, thread start)
            fwd()
        cap = capture(model)
        t0 = time.perf_counter()
        cap.__enter__()
        t_enter = time.perf_counter() - t0
        cap.__exit__(None, None, None)
        with SyncCounter() as counter, capture(model) as cap:
            fwd()
            syncs_per_forward = counter.count
        # pairs: one block without capture and one with, in alternating order so neither
        # side always runs second; inside a capture block the background thread processes
        # one forward while the next runs, as in steady use. Every overhead figure below is
        # computed from these pairs, so a burst of other work on a shared machine moves both
        # sides of a pair together instead of one side of a median.
        pairs: list[tuple[float, float, float, float]] = []  # wall, wall_cap, cpu, cpu_cap

        def without():
            fwd()  # untimed, as on the other side of the pair
            w = fwd(cpu_base) + fwd(cpu_base)
            return w, cpu_base[-1] + cpu_base[-2]

        def with_capture():
            with capture(model) as cap:
                fwd()  # untimed: the first forward of a capture sets up its buffers
                c0 = time.process_time()
                w = fwd() + fwd()
                cap.flush()  # the worker's share of the last forward counts too
                c = time.process_time() - c0
            return w, c, cap

        for i in range(args.repeats):
            if i % 2 == 0:
                wb, cb = without()
                wc, cc, cap = with_capture()
            else:
                wc, cc, cap = with_capture()
                wb, cb = without()
            pairs.append((wb / 2, wc / 2, cb / 2, cc / 2))
            stats = cap.stats
        tr = cap.trace()
    assert tr.num_tokens == 3 * args.batch * args.seq  # the last capture block: 3 forwards
    result = summarise(args, pairs, t_enter, syncs_per_forward, stats)
    if not args.quick:
        out = Path(args.json)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")
        out.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))


def _pct(q: list[float]) -> list[float]:
    return [100.0 * v for v in q]


def summarise(args, pairs, t_enter, syncs_per_forward, stats) -> dict:
    """Overheads from the pairs: median (and quartiles) of with/without - 1, per pair."""
    wall = [c / b - 1.0 for b, c, _, _ in pairs]
    cpu = [cc / cb - 1.0 for _, _, cb, cc in pairs]

    def quart(v):
        if len(v) < 2:
            return [v[0], v[0], v[0]]
        q = statistics.quantiles(v, n=4, method="inclusive")
        return [q[0], statistics.median(v), q[2]]

    return {
        "benchmark": "capture_overhead",
        "model": "mixtral (random init)",
        "hidden_size": args.hidden,
        "layers": args.layers,
        "experts": args.experts,
        "top_k": args.top_k,
        "batch": args.batch,
        "seq_len": args.seq,
        "device": args.device,
        "torch_threads": torch.get_num_threads(),
        "pairs": len(pairs),
        "forward_s_median_without": statistics.median(p[0] for p in pairs),
        "forward_s_median_with": statistics.median(p[1] for p in pairs),
        "forward_s_min_without": min(p[0] for p in pairs),
        "forward_s_min_with": min(p[1] for p in pairs),
        "overhead_pct_wall_q1_median_q3": _pct(quart(wall)),
        "overhead_pct_cpu_q1_median_q3": _pct(quart(cpu)),
        "pairs_s": [list(p) for p in pairs],
        "capture_enter_s": t_enter,
        "host_syncs_per_forward_in_capture_code": syncs_per_forward,
        "device_to_host_copies_per_forward": stats["transfers"] / max(stats["forwards"], 1),
        "correct": True,
        "loadavg": list(os.getloadavg()),
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "torch": torch.__version__,
        },
    }


def markdown(r: dict) -> str:
    """A readable table: every overhead comes from the same pairs of timed blocks."""
    w = r["overhead_pct_wall_q1_median_q3"]
    c = r["overhead_pct_cpu_q1_median_q3"]
    ms = 1e3
    return "\n".join(
        [
            f"Model: Mixtral architecture, random init, hidden {r['hidden_size']}, "
            f"{r['layers']} layers, {r['experts']} experts, top-{r['top_k']}; batch "
            f"{r['batch']} x {r['seq_len']} tokens on {r['device']} "
            f"({r['torch_threads']} torch threads); {r['pairs']} pairs of blocks (2 timed "
            "forwards without capture, 2 with, each after an untimed one), alternating order; "
            "load average " + ", ".join(f"{v:.1f}" for v in r["loadavg"]) + ".",
            "",
            "| measure | without capture | with capture | overhead, median of pairs (quartiles) |",
            "|---|---|---|---|",
            f"| wall time per forward | {r['forward_s_median_without'] * ms:.1f} ms (min "
            f"{r['forward_s_min_without'] * ms:.1f}) | {r['forward_s_median_with'] * ms:.1f} "
            f"ms (min {r['forward_s_min_with'] * ms:.1f}) | {w[1]:+.1f} % ({w[0]:+.1f} to "
            f"{w[2]:+.1f}) |",
            f"| CPU time per forward, all threads incl. the capture worker | | | {c[1]:+.1f} % "
            f"({c[0]:+.1f} to {c[2]:+.1f}) |",
            f"| host syncs per forward (capture code, forward thread) | | "
            f"{r['host_syncs_per_forward_in_capture_code']} | |",
            f"| device-to-host copies per forward | | "
            f"{r['device_to_host_copies_per_forward']:g} | |",
            f"| capture set-up (entering the context) | | {r['capture_enter_s'] * ms:.1f} ms | |",
            "",
        ]
    )


if __name__ == "__main__":
    main()
