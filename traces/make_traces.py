"""Make the synthetic sample traces in this folder (deterministic: same bytes every run,
apart from the ``created`` time stamp in the file metadata).

    python traces/make_traces.py            # writes traces/synthetic-{high,low}.lrc.arrow

See traces/README.md for what each trace is.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from lrc_kernels import synthetic_trace, write_trace  # noqa: E402

DOMAINS = ["web", "code", "math", "dialogue"]
SHAPE = {"num_sequences": 64, "seq_len": 512, "num_layers": 8, "num_experts": 64, "top_k": 8}
TRACES = {
    "synthetic-high.lrc.arrow": {"stay": 0.9, "skew": 1.0, "seed": 1},
    "synthetic-low.lrc.arrow": {"stay": 0.1, "skew": 1.0, "seed": 2},
}


def main() -> None:
    for name, knobs in TRACES.items():
        tr = synthetic_trace(**SHAPE, **knobs, domains=DOMAINS)
        out = HERE / name
        write_trace(out, tr, meta={"command": "python traces/make_traces.py"})
        size = out.stat().st_size
        print(f"{out.name}: {tr}, {size / 1e6:.2f} MB, {size / tr.num_activations:.3f} B/act")


if __name__ == "__main__":
    main()
