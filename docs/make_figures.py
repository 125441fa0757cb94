"""Draw the figures of the documentation (committed as PNG files under ``docs/img``).

    python docs/make_figures.py            # writes docs/img/locality.png

Everything comes from :func:`lrc_kernels.synthetic_trace` with fixed seeds, so the picture
is reproducible. Needs matplotlib (the ``report`` extra).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

import lrc_kernels as lk  # noqa: E402

HERE = Path(__file__).resolve().parent
E, K, T_SHOW = 32, 4, 96
CASES = (
    ("high locality (stay = 0.85)", 0.85, "#1f6f8b"),
    ("low locality (stay = 0.1)", 0.1, "#c8553d"),
)


def _raster(ax, trace, color, title):
    x = trace.sequence(0)[:T_SHOW, 0]  # (T, k) of layer 0
    img = np.zeros((E, x.shape[0]))
    for t, row in enumerate(x):
        img[row, t] = 1.0
    cmap = matplotlib.colors.ListedColormap(["#f4f4f4", color])
    ax.imshow(img, aspect="auto", interpolation="nearest", cmap=cmap, origin="lower")
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("token")
    ax.set_ylabel("expert id")


def locality_figure(out: Path) -> Path:
    """Expert activations of one layer at high and low locality, and their hit curves."""
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6), gridspec_kw={"width_ratios": [1, 1, 1.1]})
    for ax, (label, stay, color) in zip(axes[:2], CASES, strict=True):
        tr = lk.synthetic_trace(64, 512, 1, E, K, stay=stay, skew=1.0, seed=7)
        _raster(ax, tr, color, label)
        srp = lk.srp(tr, 16).value
        sch = lk.sch(tr, 16)
        lru = lk.hit_curve(tr, "lru")
        ax3 = axes[2]
        rho = sch.rho
        ax3.plot(
            rho,
            sch.rates[0],
            color=color,
            lw=2,
            label=f"{label.split(' (')[0]}: SCH m=16 (SRP={srp:.2f})",
        )
        ax3.plot(
            rho, lru.rates[0], color=color, lw=1.2, ls="--", label=f"{label.split(' (')[0]}: LRU"
        )
    ax3 = axes[2]
    ax3.axvline(2.0, color="0.4", lw=0.8, ls=":")
    ax3.text(2.05, 0.05, "rho = 2", color="0.3", fontsize=8)
    ax3.set_xlabel("cache ratio rho = cache size / k")
    ax3.set_ylabel("hit rate")
    ax3.set_title("expert cache hit rate (one layer, E = 32, k = 4)", fontsize=10)
    ax3.set_xlim(0, E / K)
    ax3.set_ylim(0, 1.02)
    ax3.legend(fontsize=7.5, loc="lower right")
    ax3.grid(alpha=0.3)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110, metadata={"Software": None})
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=HERE / "img", help="output folder")
    a = p.parse_args(argv)
    print(locality_figure(a.out / "locality.png"))


if __name__ == "__main__":
    main()
