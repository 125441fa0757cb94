"""The report's figures: plain matplotlib ``Figure`` objects drawn on the Agg canvas.

Matplotlib is imported only when a figure is drawn; no pyplot, no display, and the caller's
matplotlib backend is left alone.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from ._compute import MIN_PLOT_M, POLICY_ORDER, RHO_MARK, ModelResults, _policy_name

POLICY_STYLE = {
    "sch": {"color": "#d62728", "lw": 2.2},
    "belady": {"color": "#444444", "ls": "--", "lw": 1.6},
    "lru": {"color": "#1f77b4", "lw": 1.6},
    "lfu": {"color": "#2ca02c", "lw": 1.6},
}


def _new_figure(width: float, height: float) -> Any:
    # A bare Figure (no pyplot): no GUI, no global backend switch in the caller's process,
    # and savefig renders PNG with the Agg canvas.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)  # a renderer to measure text with (_free_label)
    return fig


def _srp_values(res: Any) -> tuple[np.ndarray, np.ndarray]:
    """Values (NaN where there is no window) and windows of a list-of-m SRP result."""
    v = np.asarray(res.value, dtype=np.float64).copy()
    w = np.asarray(res.windows)
    while w.ndim < v.ndim:
        w = w[..., None]
    v[np.broadcast_to(w == 0, v.shape)] = np.nan
    return v, w


def _grid(n: int, per_row: int = 3) -> tuple[int, int]:
    """Rows and columns of panels: up to ``per_row`` models side by side."""
    cols = min(n, per_row)
    return -(-n // cols), cols


def _panels(fig: Any, rows: int, cols: int, n: int, **kw: Any) -> list[Any]:
    """The first ``n`` axes of a rows x cols grid (the spare ones removed)."""
    grid = fig.subplots(rows, cols, squeeze=False, **kw).ravel()
    for ax in grid[n:]:
        ax.remove()
    return list(grid[:n])


def figure_srp_vs_m(models: Sequence[ModelResults]) -> Any:
    """SRP against segment length m, one line per model (the paper's Figure 4 style).

    With a bootstrap interval, the band shows it. m = 1 is left out (SRP is 1 there by
    definition), and so are m without any window.
    """
    fig = _new_figure(6.4, 4.2)
    ax = fig.add_subplot()
    all_m: set[int] = set()
    for i, r in enumerate(models):
        v, _ = _srp_values(r.srp_model)
        ms = np.asarray(r.ms, dtype=np.float64)
        ok = np.isfinite(v) & (ms >= MIN_PLOT_M)
        (line,) = ax.plot(ms[ok], v[ok], marker="o", label=r.name, color=f"C{i % 10}")
        all_m.update(int(m) for m in ms[ok])
        if r.srp_model.ci is not None:
            lo = np.asarray(r.srp_model.ci[0], dtype=np.float64)
            hi = np.asarray(r.srp_model.ci[1], dtype=np.float64)
            ax.fill_between(ms[ok], lo[ok], hi[ok], color=line.get_color(), alpha=0.2, lw=0)
    ax.set_xscale("log", base=2)
    if all_m:
        ticks = sorted(all_m)
        ax.set_xticks(ticks)
        ax.set_xticklabels([str(t) for t in ticks])
    ax.set_xlabel("segment length m (tokens)")
    ax.set_ylabel("SRP (best segment-router F1)")
    ax.set_title("Segment routing best performance against m (model level)")
    ax.set_ylim(0, 1.02)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    return fig


def _free_label(ax: Any, text: str, spots: Sequence[dict[str, Any]], avoid: Sequence[Any]) -> Any:
    """Write ``text`` at the first of ``spots`` (keyword sets of ``ax.annotate``) where its box
    lies inside the axes and touches none of the ``avoid`` lines; when every spot touches
    one, at the first spot on a white box. The figure's layout must be final.

    Returns the annotation.
    """
    from matplotlib.text import Text

    fig = ax.figure
    fig.draw_without_rendering()  # settle the constrained layout: positions are final
    renderer = fig.canvas.get_renderer()
    paths = [ln.get_transform().transform_path(ln.get_path()) for ln in avoid]
    frame = ax.get_window_extent(renderer)
    for spot in spots:
        ann = ax.annotate(text, fontsize="small", **spot)
        ann.update_positions(renderer)  # an annotation is placed when drawn; place it now
        box = Text.get_window_extent(ann, renderer).padded(6)
        inside = (
            box.x0 >= frame.x0 and box.x1 <= frame.x1 and box.y0 >= frame.y0
            and box.y1 <= frame.y1
        )  # fmt: skip
        if inside and not any(p.intersects_bbox(box, filled=False) for p in paths):
            return ann
        ann.remove()
    ann = ax.annotate(text, fontsize="small", **spots[0])
    ann.set_bbox({"facecolor": "white", "edgecolor": "none", "alpha": 0.85, "pad": 1.5})
    return ann


def _rho_spots(rho: float, at: float) -> list[dict[str, Any]]:
    """Places for the rho marker's label: beside its point, then at the foot and the head
    of its line, right and left of it."""
    near = {"xy": (rho, at), "textcoords": "offset points"}
    line = {"textcoords": "offset points", "xycoords": ("data", "axes fraction")}
    spots = []
    for dy, va in ((-10, "top"), (8, "bottom")):
        for dx, ha in ((8, "left"), (-8, "right")):
            spots.append({**near, "xytext": (dx, dy), "ha": ha, "va": va})
    for y, va in ((0.03, "bottom"), (0.97, "top")):
        for dx, ha in ((6, "left"), (-6, "right")):
            spots.append({**line, "xy": (rho, y), "xytext": (dx, 0), "ha": ha, "va": va})
    return spots


def figure_hit_vs_rho(models: Sequence[ModelResults], rho_mark: float = RHO_MARK) -> Any:
    """Hit rate against cache ratio rho for SCH, Belady, LRU and LFU; one panel per model.

    Layer level, averaged over the MoE layers; a dotted vertical line marks ``rho_mark``
    (the paper's recommended rho = 2) and the SCH value there is written where it crosses
    no curve. One legend below the panels serves all of them.
    """
    n = len(models)
    rows, cols = _grid(n)
    fig = _new_figure(max(4.6 * cols, 5.0), 4.0 * rows + 0.5)
    axes = _panels(fig, rows, cols, n, sharey=True)
    marks = []
    for ax, r in zip(axes, models, strict=True):
        lines = []
        for pol in POLICY_ORDER:
            rho, h = r.mean_curve(pol)
            label = _policy_name(pol, r.sch_m)
            (ln,) = ax.plot(
                np.concatenate([[0.0], rho]),
                np.concatenate([[0.0], h]),
                label=label,
                **POLICY_STYLE[pol],
            )
            lines.append(ln)
        at = r.hit_at("sch", rho_mark)
        if math.isfinite(at):
            vline = ax.axvline(rho_mark, color="#888888", ls=":", lw=1.2, label=f"ρ = {rho_mark:g}")
            ax.plot([rho_mark], [at], "o", color=POLICY_STYLE["sch"]["color"])
            marks.append((ax, at, [*lines, vline]))
        ax.set_title(r.name)
        ax.set_xlabel("cache ratio ρ = C / k (experts cached per layer / top-k)")
        ax.set_xlim(0, float(r.info["num_experts"]) / r.top_k)
        ax.grid(True, alpha=0.3)
    for i, ax in enumerate(axes):
        if i % cols == 0:
            ax.set_ylabel("hit rate (mean over layers)")
    axes[0].set_ylim(0, 1.02)
    handles, labels = axes[0].get_legend_handles_labels()
    if marks:  # the marker's line is in every panel that has one
        handles, labels = marks[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=len(labels), fontsize="small")
    fig.suptitle("Expert-cache hit rate against cache size (layer level)")
    for ax, at, avoid in marks:
        _free_label(ax, f"ρ={rho_mark:g}: SCH {at:.3f}", _rho_spots(rho_mark, at), avoid)
    return fig


def figure_layer_heatmap(models: Sequence[ModelResults]) -> Any:
    """Per-layer SRP as a heatmap (layers x m >= 2), one panel per model, shared colour scale."""
    n = len(models)
    rows, cols = _grid(n)
    layers = max(int(r.info["num_layers"]) for r in models)
    height = min(10.0, max(2.6, 0.22 * layers + 1.6))
    fig = _new_figure(max(4.4 * cols, 5.0), height * rows)
    axes = _panels(fig, rows, cols, n)
    im = None
    for ax, r in zip(axes, models, strict=True):
        v, _ = _srp_values(r.srp_layer)  # (M, L)
        keep = [j for j, m in enumerate(r.ms) if m >= MIN_PLOT_M]
        grid = v[keep].T  # (L, M), m >= 2
        im = ax.imshow(grid, aspect="auto", origin="lower", vmin=0.0, vmax=1.0, cmap="viridis")
        L, M = grid.shape
        ax.set_xticks(range(M))
        ax.set_xticklabels([str(r.ms[j]) for j in keep])
        ids = r.info.get("layer_ids")
        ylabels = ids.split() if isinstance(ids, str) and len(ids.split()) == L else range(L)
        step = max(1, L // 16)
        ax.set_yticks(range(0, L, step))
        ax.set_yticklabels([str(y) for y in list(ylabels)[::step]])
        if L * M <= 160:
            for i in range(L):
                for j in range(M):
                    if np.isfinite(grid[i, j]):
                        ax.text(
                            j,
                            i,
                            f"{grid[i, j]:.2f}",
                            ha="center",
                            va="center",
                            fontsize=7,
                            color="white" if grid[i, j] < 0.6 else "black",
                        )
        ax.set_xlabel("segment length m")
        ax.set_ylabel("MoE layer" if ids is None else "MoE layer (model layer index)")
        ax.set_title(r.name)
    if im is not None:
        fig.colorbar(im, ax=list(axes), label="SRP", shrink=0.9)
    fig.suptitle("Per-layer SRP")
    return fig


DS_MEANING = (
    "std / mean of each expert's activation ratio across domains, mean over experts: "
    "0 = every expert is used alike in every domain"
)
DS_SYNTHETIC = (
    "synthetic traces draw each domain's experts from its own random popularity ranking, "
    "so an expert common in one domain is rare in another: about 0.7 at skew 1"
)


def figure_domains(models: Sequence[ModelResults]) -> Any | None:
    """Per-domain bars: model-level SRP at m = sch_m and SCH at rho = 2, models side by side,
    and each model's domain specialisation with what its value means.

    One legend below the panels serves all of them. Returns None when no model has domain
    labels.
    """
    import textwrap

    with_dom = [r for r in models if r.srp_domain is not None]
    if not with_dom:
        return None
    domains: list[str] = []
    for r in with_dom:
        for d in r.srp_domain.domains:
            if str(d) not in domains:
                domains.append(str(d))
    fig = _new_figure(max(12.0, 0.9 * len(domains) * len(with_dom) + 6.0), 4.6)
    ax1, ax2, ax3 = fig.subplots(1, 3, width_ratios=[1, 1, 0.75])
    width = 0.8 / len(with_dom)
    x = np.arange(len(domains))
    for i, r in enumerate(with_dom):
        idx = {str(d): j for j, d in enumerate(r.srp_domain.domains)}
        srp = np.full(len(domains), np.nan)
        sch = np.full(len(domains), np.nan)
        vals = np.asarray(r.srp_domain.value, dtype=np.float64)
        win = np.asarray(r.srp_domain.windows)
        try:
            sch_at = np.asarray(r.sch_domain.at(RHO_MARK), dtype=np.float64).mean(axis=-1)
        except ValueError:
            sch_at = np.full(len(idx), np.nan)
        for d, j in idx.items():
            k = domains.index(d)
            srp[k] = vals[j] if win[j] > 0 else np.nan
            sch[k] = sch_at[j]
        off = (i - (len(with_dom) - 1) / 2) * width
        color = f"C{list(models).index(r) % 10}"  # the model's colour in every figure
        ax1.bar(x + off, srp, width, label=r.name, color=color)
        ax2.bar(x + off, sch, width, label=r.name, color=color)
        ds = r.domain_specialization
        ds = float("nan") if ds is None else float(ds)
        ax3.bar([i], [ds], 0.7, label=r.name, color=color)
        if math.isfinite(ds):
            ax3.annotate(f"{ds:.3f}", (i, ds), xytext=(0, 2), textcoords="offset points",
                         ha="center", va="bottom", fontsize="small")  # fmt: skip
    m = with_dom[0].sch_m
    for ax, what in (
        (ax1, f"SRP at m = {m} (model level)"),
        (ax2, f"SCH at ρ = {RHO_MARK:g}, m = {m} (mean over layers)"),
    ):
        ax.set_xticks(x)
        ax.set_xticklabels(
            domains,
            rotation=30 if len(domains) > 4 else 0,
            ha="right" if len(domains) > 4 else "center",
        )
        ax.set_xlabel("domain")
        ax.set_ylim(0, 1.02)
        ax.set_title(what)
        ax.grid(True, axis="y", alpha=0.3)
    ax1.set_ylabel("SRP")
    ax2.set_ylabel("hit rate")
    top = max([r.domain_specialization or 0.0 for r in with_dom] + [0.0])
    ax3.set_ylim(0, max(1.2, 1.6 * top))
    ax3.set_xlim(-0.6, len(with_dom) - 0.4)
    ax3.set_xticks([])
    ax3.set_title(f"Domain specialisation (m = {m})")
    ax3.set_ylabel("coefficient of variation across domains")
    ax3.set_xlabel(textwrap.fill(DS_MEANING, 44), fontsize="small")
    ax3.grid(True, axis="y", alpha=0.3)
    if any(r.synthetic for r in with_dom):
        ax3.text(0.03, 0.97, textwrap.fill(DS_SYNTHETIC, 40), transform=ax3.transAxes,
                 ha="left", va="top", fontsize="x-small", color="#444444")  # fmt: skip
    handles, labels = ax1.get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=len(labels), fontsize="small")
    fig.suptitle("Routing consistency per domain")
    return fig


def figure_models(models: Sequence[ModelResults]) -> Any | None:
    """The models compared (the paper's main view): model-level SRP at m = sch_m against the
    layer-mean SCH hit rate at rho = 2, one point per model in its colour. None for fewer
    than two models."""
    if len(models) < 2:
        return None
    fig = _new_figure(6.4, 4.8)
    ax = fig.subplots()
    m = models[0].sch_m
    for i, r in enumerate(models):
        v, _ = _srp_values(r.srp_model)
        srp = float(v[r.ms.index(r.sch_m)]) if r.sch_m in r.ms else float("nan")
        sch = r.hit_at("sch", RHO_MARK)
        if not (math.isfinite(srp) and math.isfinite(sch)):
            continue
        ax.scatter([srp], [sch], s=60, color=f"C{i % 10}", zorder=3, label=r.name)
    ax.set_xlabel(f"SRP at m = {m} (model level)")
    ax.set_ylabel(f"SCH hit rate at ρ = {RHO_MARK:g}, m = {m} (mean over layers)")
    ax.set_xlim(0, 1.02)
    ax.set_ylim(0, 1.02)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right", fontsize="small")  # names never overlap, close points or not
    ax.set_title("Models compared: segment routing against segment caching")
    return fig
