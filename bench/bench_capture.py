"""Forward-time overhead of lrc_kernels.torch.capture on a small Mixtral-like model.

Runs batches of 8 x 512 random tokens through a randomly initialised Mixtral-architecture
model (no download) with and without capture, interleaved, and reports the median forward
time of each, the overhead, host synchronisations made by the capture code on the forward
thread, and device-to-host copies per forward. The captured ids are checked against the
indices the experts received before any time is reported.

    python bench/bench_capture.py                      # the issue's setting, CPU
    python bench/bench_capture.py --quick              # CI: tiny sizes, correctness only
    python bench/bench_capture.py --device cuda        # on a GPU machine

Writes JSON (``--json``, default bench/results/capture.json) and prints a markdown table.
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
    ap.add_argument("--repeats", type=int, default=10)
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
    cpu_cap: list[float] = []

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
        base, with_cap = [], []
        cap = capture(model)
        t0 = time.perf_counter()
        cap.__enter__()
        t_enter = time.perf_counter() - t0
        cap.__exit__(None, None, None)
        with SyncCounter() as counter, capture(model) as cap:
            fwd()
            syncs_per_forward = counter.count
        # interleaved blocks; inside a capture block the background thread processes one
        # forward while the next runs, as in steady use
        for _ in range(args.repeats):
            base.append(fwd(cpu_base))
            base.append(fwd(cpu_base))
            with capture(model) as cap:
                with_cap.append(fwd(cpu_cap))
                c0 = time.process_time()
                with_cap.append(fwd(cpu_cap))
                cap.flush()  # the worker's share of the last forward counts too
                cpu_cap[-1] = time.process_time() - c0
            stats = cap.stats
        tr = cap.trace()
    assert tr.num_tokens == 2 * args.batch * args.seq
    b, c = statistics.median(base), statistics.median(with_cap)
    bmin, cmin = min(base), min(with_cap)
    bcpu, ccpu = statistics.median(cpu_base), statistics.median(cpu_cap)
    result = {
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
        "repeats": args.repeats,
        "forward_s_median_without": b,
        "forward_s_median_with": c,
        "overhead_pct": 100.0 * (c / b - 1.0),
        "forward_s_min_without": bmin,
        "forward_s_min_with": cmin,
        "overhead_pct_of_min": 100.0 * (cmin / bmin - 1.0),
        "cpu_s_median_without": bcpu,
        "cpu_s_median_with": ccpu,
        "overhead_pct_cpu_time": 100.0 * (ccpu / bcpu - 1.0),
        "forward_s_all_without": base,
        "forward_s_all_with": with_cap,
        "capture_enter_s": t_enter,
        "host_syncs_per_forward_in_capture_code": syncs_per_forward,
        "device_to_host_copies_per_forward": stats["transfers"] / max(stats["forwards"], 1),
        "correct": True,
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "torch": torch.__version__,
        },
    }
    if not args.quick:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"| model | batch x seq | device | forward, median (no capture) | forward, median "
        f"(capture) | overhead "
        f"| host syncs / fwd | D2H copies / fwd |\n|---|---|---|---|---|---|---|---|\n"
        f"| mixtral h={args.hidden} L={args.layers} E={args.experts} k={args.top_k} "
        f"| {args.batch} x {args.seq} | {args.device} ({torch.get_num_threads()} threads) "
        f"| {b * 1e3:.1f} ms (min {bmin * 1e3:.1f}) | {c * 1e3:.1f} ms (min {cmin * 1e3:.1f}) "
        f"| {result['overhead_pct']:+.2f} % (of min: {result['overhead_pct_of_min']:+.2f} %) "
        f"| {syncs_per_forward} | {result['device_to_host_copies_per_forward']:g} |"
    )
    print(
        f"process CPU time per forward (all threads, incl. the capture worker): "
        f"{bcpu * 1e3:.1f} ms without, {ccpu * 1e3:.1f} ms with capture: "
        f"{result['overhead_pct_cpu_time']:+.2f} %"
    )
    print(f"machine: {result['machine']}")


if __name__ == "__main__":
    main()
