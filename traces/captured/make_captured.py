"""Regenerate the sample captures in this folder (tiny random models, CPU, no download).

    python traces/captured/make_captured.py

Each model is a randomly initialised tiny model (lrc_kernels._capture._tiny) of one
family; two domains of 8 sequences x 256 tokens each are run through it under
lrc_kernels.torch.capture: "random" (uniform random token ids) and "repeat" (a random
16-token pattern repeated, so the routing repeats too).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))

import torch  # noqa: E402

from lrc_kernels._capture._tiny import tiny_model  # noqa: E402
from lrc_kernels.torch import capture  # noqa: E402

FAMILIES = ("mixtral", "deepseek_v3", "qwen3_moe", "switch_transformers")
S, T = 8, 256


def domains() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(2505)
    rand = torch.randint(3, 128, (S, T), generator=g)
    pat = torch.randint(3, 128, (S, 16), generator=g)
    return {"random": rand, "repeat": pat.repeat(1, T // 16)}


def main() -> None:
    data = domains()
    for fam in FAMILIES:
        model = tiny_model(fam, seed=0)
        out = HERE / f"tiny-{fam.replace('_', '-')}.lrc.arrow"
        meta = {"source": "random-init tiny model, see traces/captured/README.md"}
        with capture(model, out, weights=True, meta=meta) as cap, torch.no_grad():
            for dom, ids in data.items():
                cap.domain = dom
                for start in range(0, S, 4):
                    batch = ids[start : start + 4]
                    if model.config.is_encoder_decoder:
                        model(input_ids=batch, decoder_input_ids=batch)
                    else:
                        model(input_ids=batch, use_cache=False)
        for group, path in cap.paths.items():
            print(f"{path.name}: {path.stat().st_size} bytes ({group})")


if __name__ == "__main__":
    main()
