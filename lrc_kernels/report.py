"""HTML + PNG report of a set of routing traces (the ``lrc report`` command).

The report holds the paper's views of local routing consistency, for several models side
by side: SRP against the segment length m (Figure 4 style), hit rate against the cache
ratio rho for the SCH oracle and LRU / LFU / Belady caches with rho = 2 marked, a
per-layer SRP heatmap, per-domain bars, the numbers behind every figure as tables, and the
trace metadata. ``index.html`` embeds the figures, so the one file can be mailed around;
the PNGs and a ``report.json`` of tidy rows are written next to it.

Matplotlib is imported only when a figure is drawn; figures are plain
``matplotlib.figure.Figure`` objects rendered by the Agg canvas (no display, no pyplot, and
the caller's matplotlib backend is left alone).
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import io
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "ModelResults",
    "compute_results",
    "figure_srp_vs_m",
    "figure_hit_vs_rho",
    "figure_layer_heatmap",
    "figure_domains",
    "write_report",
    "render",
    "report_rows",
]

RHO_MARK = 2.0
RHO_TABLE = (0.5, 1.0, 1.5, 2.0, 3.0, 4.0)
POLICY_ORDER = ("sch", "belady", "lru", "lfu")
POLICY_STYLE = {
    "sch": {"color": "#d62728", "lw": 2.2},
    "belady": {"color": "#444444", "ls": "--", "lw": 1.6},
    "lru": {"color": "#1f77b4", "lw": 1.6},
    "lfu": {"color": "#2ca02c", "lw": 1.6},
}
# traces with more activations than this are streamed from disk by every metric call
# instead of being read into memory once
_IN_MEMORY_ACTIVATIONS = 200_000_000


@dataclass
class ModelResults:
    """Everything the report shows for one model (trace).

    Attributes
    ----------
    name : str
        Model name shown in figures and tables.
    info : dict
        Trace metadata (see ``lrc info``).
    ms : list of int
        Segment lengths of the SRP results.
    srp_model, srp_layer : SRPResult
        SRP for every m at model level (with a bootstrap interval when asked) and per layer.
    curves : dict of str to HitCurve
        Layer-level hit curves per policy (``"sch"`` with future window ``sch_m``).
    sch_m : int
        Future window of SCH, and the m of the per-domain SRP.
    srp_domain : SRPResult or None
        Model-level SRP at ``sch_m`` per domain label (None without labels).
    sch_domain : HitCurve or None
        Layer-level SCH curve per domain label.
    load_balance : float
        Global load balance at m = ``sch_m``: std (ddof=1) of all experts' activation
        ratios (:func:`lrc_kernels.load_balance`; the paper prints it x100).
    domain_specialization : float or None
        Mean coefficient of variation of the experts' activation ratios across domains
        (:func:`lrc_kernels.domain_specialization`); None without domain labels.
    synthetic : bool
        The trace was made by :func:`lrc_kernels.synthetic_trace` (its metadata says so).
    notes : list of str
        What the report could not show for this trace, and why.
    """

    name: str
    info: dict[str, Any]
    ms: list[int]
    srp_model: Any
    srp_layer: Any
    curves: dict[str, Any]
    sch_m: int
    srp_domain: Any = None
    sch_domain: Any = None
    load_balance: float = float("nan")
    domain_specialization: float | None = None
    synthetic: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def top_k(self) -> int:
        return int(self.info["top_k"])

    def mean_curve(self, policy: str) -> tuple[np.ndarray, np.ndarray]:
        """``(rho, hit rate)`` of a policy, averaged over the layers."""
        c = self.curves[policy]
        return np.asarray(c.rho, dtype=np.float64), np.asarray(c.rates).mean(axis=0)

    def hit_at(self, policy: str, rho: float) -> float:
        """Layer-mean hit rate at cache ratio ``rho`` (NaN where rho gives no whole size)."""
        c = self.curves[policy]
        try:
            v = c.at(rho)
        except ValueError:
            return float("nan")
        return float(np.mean(v))


# SRP at m = 1 is 1 by definition (a one-token segment router keeps exactly the token's
# experts), so the report's SRP figures start at m = 2
MIN_PLOT_M = 2


def _default_ms(max_len: int) -> list[int]:
    ms = [m for m in (2, 4, 8, 16, 32, 64, 128, 256) if m <= max(max_len, 2)]
    return ms or [2]


def compute_results(
    sources: Sequence[Any],
    *,
    ms: Sequence[int] | None = None,
    sch_m: int = 16,
    bootstrap: int = 0,
    backend: str = "auto",
    progress: Any = None,
) -> list[ModelResults]:
    """Compute every number of the report with the public API.

    Parameters
    ----------
    sources : sequence of lrc_kernels.cli.TraceSource
        The traces, one per model (see :func:`lrc_kernels.cli.open_sources`).
    ms : sequence of int, optional
        Segment lengths for SRP; default 2, 4, ... 256 up to the longest sequence (SRP at
        m = 1 is 1 by definition; the figures leave it out when asked for).
    sch_m : int
        Future window of SCH, also the m of the per-domain SRP bars (the paper: 16).
    bootstrap : int
        Bootstrap resamples for the model-level SRP interval (0: none).
    backend : str
        Compute backend passed to the API.
    progress : lrc_kernels.cli.Progress, optional
        Shows a bar over the computation steps.

    Returns
    -------
    list of ModelResults
    """
    import lrc_kernels as lk

    out = []
    steps_per_model = 8
    bar = None
    if progress is not None and progress.enabled:
        from tqdm.auto import tqdm  # enabled only where tqdm imports (cli._show_progress)

        bar = tqdm(total=steps_per_model * len(sources), desc="report", leave=False, delay=0.5)
    try:
        for s in sources:
            info = s.info()
            reader = s.reader
            lengths = reader.lengths()
            max_len = int(lengths.max()) if lengths.size else 0
            m_list = [int(v) for v in ms] if ms else _default_ms(max_len)
            if sch_m not in m_list:  # the summary quotes SRP at m = sch_m
                m_list = sorted(set(m_list) | {int(sch_m)})
            if reader.num_activations <= _IN_MEMORY_ACTIVATIONS:
                data: Any = lk.read_trace(s.path, weights=False)
            else:
                data = s.path

            def step(_bar: Any = bar) -> None:
                if _bar is not None:
                    _bar.update(1)

            srp_layer = lk.srp(data, m_list, level="layer", backend=backend)
            step()
            if bootstrap:
                srp_model = lk.srp(
                    data, m_list, level="model", bootstrap=bootstrap, backend=backend
                )
            else:  # the same histograms pooled over layers: no second pass over the trace
                srp_model = _pool_layers(srp_layer)
            step()
            curves = {}
            for pol in POLICY_ORDER:
                curves[pol] = lk.hit_curve(
                    data, pol, m=sch_m if pol == "sch" else None, level="layer", backend=backend
                )
                step()
            has_domains = info["num_domains"] > 0 and all(d is not None for d in reader.domains())
            lb = lk.load_balance(data, sch_m, backend=backend)
            step()
            srp_dom = sch_dom = ds = None
            if has_domains:
                ds = lk.domain_specialization(data, sch_m, backend=backend)[0]
                srp_dom = lk.srp(data, sch_m, level="model", by_domain=True, backend=backend)
                sch_dom = lk.sch(data, sch_m, level="layer", by_domain=True, backend=backend)
            step()
            r = ModelResults(
                name=s.name,
                info=info,
                ms=m_list,
                srp_model=srp_model,
                srp_layer=srp_layer,
                curves=curves,
                sch_m=sch_m,
                srp_domain=srp_dom,
                sch_domain=sch_dom,
                load_balance=lb,
                domain_specialization=ds,
                synthetic=reader.meta.get("generator") == "lrc_kernels.synthetic_trace",
            )
            short = [m for m in m_list if m > max_len]
            if short:
                r.notes.append(
                    f"m = {', '.join(map(str, short))} "
                    f"{'exceeds' if len(short) == 1 else 'exceed'} the longest sequence "
                    f"({max_len} tokens): no windows, not plotted"
                )
            if 2 * r.top_k > int(info["num_experts"]):
                r.notes.append(
                    f"rho = 2 needs a cache of 2k = {2 * r.top_k} experts but a layer has only "
                    f"{info['num_experts']}"
                )
            out.append(r)
    finally:
        if bar is not None:
            bar.close()
    return out


def _pool_layers(layer: Any) -> Any:
    """Model-level SRP from a layer-level result (list of m, no domains): the layer
    histograms summed, then the API's own best-threshold reduction, so the values are
    bit-identical to ``srp(..., level="model")``."""
    from ._api import srp_from_histogram
    from ._results import SRPResult

    values, thresholds, ratios, hists = [], [], [], []
    for m, H in zip(layer.m, layer.histogram, strict=True):
        pooled = np.asarray(H, dtype=np.int64).sum(axis=0)
        f1, thr, ratio = srp_from_histogram(pooled, int(m))
        values.append(f1)
        thresholds.append(thr)
        ratios.append(ratio)
        hists.append(pooled)
    return SRPResult(
        value=np.stack(values),
        threshold=np.stack(thresholds),
        ratio=np.stack(ratios),
        m=list(layer.m),
        level="model",
        windows=layer.windows,
        histogram=hists,
    )


# -------------------------------------------------------------------------- figures
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


# ---------------------------------------------------------------------------- tables
def _cell(v: Any, digits: int = 4) -> str:
    if v is None:
        return "–"
    if isinstance(v, (float, np.floating)):
        return "–" if not math.isfinite(float(v)) else f"{float(v):.{digits}f}"
    if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
        return f"{int(v):,}"
    return html.escape(str(v))


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]], cls: str = "") -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_cell(c)}</td>" for c in r) + "</tr>" for r in rows)
    c = f' class="{cls}"' if cls else ""
    return f"<table{c}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _meta_table(models: Sequence[ModelResults]) -> str:
    keys = [
        ("path", "path"),
        ("num_experts", "experts E"),
        ("top_k", "top-k"),
        ("num_layers", "MoE layers L"),
        ("layer_ids", "layer ids"),
        ("sequences", "sequences"),
        ("tokens", "tokens"),
        ("activations", "activations"),
        ("domains", "domains"),
        ("file_bytes", "file bytes"),
        ("bytes_per_activation", "bytes / activation"),
        ("producer", "producer"),
        ("created", "created"),
    ]
    rows = [[label] + [r.info.get(k) for r in models] for k, label in keys]
    return _table(["", *[r.name for r in models]], rows, "meta")


def _srp_table(models: Sequence[ModelResults]) -> str:
    ms = sorted({m for r in models for m in r.ms})
    header = ["m"]
    boot = any(r.srp_model.ci is not None for r in models)
    for r in models:
        header += [f"{r.name} SRP", "p*", "preds/acts"] + (["CI"] if boot else [])
    rows = []
    for m in ms:
        row: list[Any] = [m]
        for r in models:
            if m not in r.ms:
                row += [None, None, None] + ([None] if boot else [])
                continue
            i = r.ms.index(m)
            v, w = _srp_values(r.srp_model)
            row += [
                float(v[i]),
                int(np.asarray(r.srp_model.threshold)[i]) if np.isfinite(v[i]) else None,
                float(np.asarray(r.srp_model.ratio)[i]),
            ]
            if boot:
                ci = r.srp_model.ci
                row.append(
                    None
                    if ci is None or not np.isfinite(v[i])
                    else f"[{float(ci[0][i]):.4f}, {float(ci[1][i]):.4f}]"
                )
        rows.append(row)
    return _table(header, rows)


def _policy_name(pol: str, m: int) -> str:
    return {"sch": f"SCH (m={m})", "belady": "Belady", "lru": "LRU", "lfu": "LFU"}[pol]


def _summary_table(models: Sequence[ModelResults]) -> str:
    m = models[0].sch_m
    header = [
        "model", f"SRP (m={m})", f"SCH (ρ={RHO_MARK:g}, m={m})", f"Belady (ρ={RHO_MARK:g})",
        f"LRU (ρ={RHO_MARK:g})", f"LFU (ρ={RHO_MARK:g})", "load balance ×100",
        "domain specialisation",
    ]  # fmt: skip
    rows = []
    for r in models:
        v, _ = _srp_values(r.srp_model)
        srp = float(v[r.ms.index(r.sch_m)]) if r.sch_m in r.ms else None
        rows.append([
            r.name, srp, *[r.hit_at(p, RHO_MARK) for p in ("sch", "belady", "lru", "lfu")],
            100 * r.load_balance, r.domain_specialization,
        ])  # fmt: skip
    return _table(header, rows)


def _hit_table(models: Sequence[ModelResults]) -> str:
    header = ["model", "policy", *[f"ρ={r:g}" for r in RHO_TABLE]]
    rows = []
    for r in models:
        for pol in POLICY_ORDER:
            rows.append(
                [r.name, _policy_name(pol, r.sch_m), *[r.hit_at(pol, rho) for rho in RHO_TABLE]]
            )
    return _table(header, rows)


def _layer_table(models: Sequence[ModelResults]) -> str:
    parts = []
    for r in models:
        v, _ = _srp_values(r.srp_layer)  # (M, L)
        header = ["layer", *[f"m={m}" for m in r.ms]]
        rows = [[li, *[float(v[j, li]) for j in range(len(r.ms))]] for li in range(v.shape[1])]
        parts.append(f"<h4>{html.escape(r.name)}</h4>" + _table(header, rows))
    return "".join(parts)


def _domain_table(models: Sequence[ModelResults]) -> str:
    rows = []
    for r in models:
        if r.srp_domain is None:
            continue
        vals = np.asarray(r.srp_domain.value, dtype=np.float64)
        win = np.asarray(r.srp_domain.windows)
        try:
            sch_at = np.asarray(r.sch_domain.at(RHO_MARK), dtype=np.float64).mean(axis=-1)
        except ValueError:
            sch_at = np.full(len(r.srp_domain.domains), np.nan)
        seqs = np.asarray(r.sch_domain.sequences)
        for j, d in enumerate(r.srp_domain.domains):
            rows.append(
                [r.name, d, int(seqs[j]), float(vals[j]) if win[j] else None, float(sch_at[j])]
            )
    if not rows:
        return "<p>No trace has domain labels.</p>"
    m = models[0].sch_m
    return _table(
        ["model", "domain", "sequences", f"SRP (m={m})", f"SCH (ρ={RHO_MARK:g}, m={m})"], rows
    )


# ---------------------------------------------------------------------------- output
_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2rem auto;
max-width:1200px;padding:0 1rem;color:#222;line-height:1.45}
h1{margin-bottom:.2rem}.sub{color:#666;margin-top:0}
table{border-collapse:collapse;margin:.6rem 0 1.2rem;font-size:.88rem}
th,td{border:1px solid #ddd;padding:.25rem .55rem;text-align:right}
th{background:#f4f4f4}td:first-child,th:first-child{text-align:left}
table.meta td{text-align:left}
figure{margin:1rem 0}figure img{max-width:100%;border:1px solid #eee}
figcaption{color:#555;font-size:.9rem}.note{color:#8a5a00}
"""


def _png_bytes(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _figure_html(png: bytes, name: str, alt: str, caption: str) -> str:
    b64 = base64.b64encode(png).decode("ascii")
    return (
        f'<figure><img src="data:image/png;base64,{b64}" alt="{html.escape(alt)}">'
        f'<figcaption>{caption} (<a href="{html.escape(name)}">{html.escape(name)}</a>)'
        "</figcaption></figure>"
    )


def report_rows(models: Sequence[ModelResults]) -> dict[str, list[dict[str, Any]]]:
    """The numbers of the report as tidy rows: the results' ``to_pandas()`` frames with a
    ``model`` column first (the rows of ``lrc srp/curves --json``; NaN as None)."""
    import pyarrow as pa

    def rows(name: str, frame: Any) -> list[dict[str, Any]]:
        frame.insert(0, "model", name)
        return pa.Table.from_pandas(frame, preserve_index=False).to_pylist()

    out: dict[str, list[dict[str, Any]]] = {
        "traces": [],
        "srp": [],
        "srp_layer": [],
        "curves": [],
        "srp_domain": [],
        "sch_domain": [],
    }
    for r in models:
        out["traces"].append(dict(r.info))
        out["srp"].extend(rows(r.name, r.srp_model.to_pandas()))
        out["srp_layer"].extend(rows(r.name, r.srp_layer.to_pandas()))
        for pol in POLICY_ORDER:
            out["curves"].extend(rows(r.name, r.curves[pol].to_pandas()))
        if r.srp_domain is not None:
            out["srp_domain"].extend(rows(r.name, r.srp_domain.to_pandas()))
            out["sch_domain"].extend(rows(r.name, r.sch_domain.to_pandas()))
    return out


def write_report(
    sources: Sequence[Any],
    out: str | Path,
    *,
    ms: Sequence[int] | None = None,
    sch_m: int = 16,
    bootstrap: int = 0,
    title: str | None = None,
    backend: str = "auto",
    progress: Any = None,
) -> Path:
    """Compute the metrics of ``sources`` and write the report into directory ``out``.

    Parameters
    ----------
    sources : sequence of lrc_kernels.cli.TraceSource
        One trace per model (:func:`lrc_kernels.cli.open_sources`).
    out : path
        Output directory (created if missing). Receives ``index.html`` (self-contained),
        ``srp_vs_m.png``, ``hit_vs_rho.png``, ``layer_srp.png``, ``domains.png`` (when any
        trace has domain labels) and ``report.json``.
    ms, sch_m, bootstrap, backend, progress
        See :func:`compute_results`.
    title : str, optional
        Page title (default: the model names).

    Returns
    -------
    Path
        The path of ``index.html``.
    """
    out_dir = _out_dir(out)
    models = compute_results(
        sources, ms=ms, sch_m=sch_m, bootstrap=bootstrap, backend=backend, progress=progress
    )
    return render(models, out_dir, title=title, bootstrap=bootstrap)


def _out_dir(out: str | Path) -> Path:
    d = Path(out)
    if d.exists() and not d.is_dir():
        raise NotADirectoryError(f"{d} exists and is not a directory; give a directory for --out")
    d.mkdir(parents=True, exist_ok=True)
    return d


def render(
    models: Sequence[ModelResults],
    out_dir: str | Path,
    *,
    title: str | None = None,
    bootstrap: int = 0,
) -> Path:
    """Draw the figures and write ``index.html``, the PNGs and ``report.json`` into out_dir."""
    from . import __version__

    out_dir = _out_dir(out_dir)
    names = [r.name for r in models]
    title = title or "Local routing consistency: " + ", ".join(names)
    figs = [
        (
            "srp_vs_m.png",
            figure_srp_vs_m(models),
            "SRP against segment length m",
            "SRP of the best segment router against the segment length m, one line per model "
            "(model level: one threshold for the whole model). m = 1 is not drawn: a one-token "
            "segment router keeps exactly the token's experts, so SRP at m = 1 is 1."
            + (f" Bands: {bootstrap}-resample bootstrap 95% intervals." if bootstrap else ""),
        ),
        (
            "hit_vs_rho.png",
            figure_hit_vs_rho(models),
            "hit rate against cache ratio",
            f"Hit rate of a per-layer expert cache against the cache ratio ρ = C/k, averaged over "
            f"layers: SCH (oracle knowing the next m tokens), Belady (optimal offline), LRU, LFU. "
            f"The dotted line marks ρ = {RHO_MARK:g}, the paper's recommended size.",
        ),
        (
            "layer_srp.png",
            figure_layer_heatmap(models),
            "per-layer SRP heatmap",
            "SRP of every MoE layer (rows) at every segment length m >= 2 (columns).",
        ),
    ]
    dom_fig = figure_domains(models)
    if dom_fig is not None:
        figs.append(
            (
                "domains.png",
                dom_fig,
                "per-domain SRP and SCH",
                f"Per domain: model-level SRP at m = {models[0].sch_m} and layer-mean SCH "
                f"at ρ = {RHO_MARK:g}. Right: domain specialisation, the {DS_MEANING}; "
                "it grows as experts specialise on domains."
                + (
                    f" Why synthetic traces score about 0.7: {DS_SYNTHETIC}."
                    if any(r.synthetic for r in models)
                    else ""
                ),
            )
        )
    pngs = {}
    for name, fig, _, _ in figs:
        png = _png_bytes(fig)
        (out_dir / name).write_bytes(png)
        pngs[name] = png
    rows = report_rows(models)
    (out_dir / "report.json").write_text(json.dumps(rows, indent=1, allow_nan=False) + "\n")

    notes = "".join(
        f'<p class="note">{html.escape(r.name)}: {html.escape(n)}</p>'
        for r in models
        for n in r.notes
    )
    created = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    fig_html = {name: _figure_html(pngs[name], name, alt, cap) for name, _, alt, cap in figs}
    sections = [
        f"<h1>{html.escape(title)}</h1>",
        f'<p class="sub">lrc_kernels {html.escape(__version__)} · {created} · '
        "metrics of <i>Not All Models Suit Expert Offloading</i> (arXiv 2505.16056)</p>",
        notes,
        "<h2>At a glance</h2>",
        "<p>Higher SRP and SCH mean routing that stays local, so experts can be offloaded and "
        "cached: SRP is the F1 of the best router that fixes its experts per segment of m "
        "tokens; SCH the hit rate of a per-layer expert cache of ρ·k experts that knows the "
        "next m tokens (Belady: the optimal offline cache; LRU, LFU: online caches). Load "
        "balance is the spread of the experts' activation ratios; domain specialisation how "
        "much they vary across domains.</p>",
        _summary_table(models),
        "<h2>Traces</h2>",
        _meta_table(models),
        "<h2>Segment routing best performance (SRP)</h2>",
        "<p>How well a router that fixes its experts for a whole segment of m tokens could "
        "match the real routing (F1 at the best threshold p*; preds/acts: experts the segment "
        "router keeps per real activation). Higher is better for expert offloading.</p>",
        fig_html["srp_vs_m.png"],
        _srp_table(models),
        "<h2>Expert-cache hit rate</h2>",
        fig_html["hit_vs_rho.png"],
        _hit_table(models),
        "<h2>SRP per layer</h2>",
        fig_html["layer_srp.png"],
        _layer_table(models),
        "<h2>Per domain</h2>",
        fig_html.get("domains.png", ""),
        _domain_table(models),
        '<p class="sub">All numbers as tidy rows: <a href="report.json">report.json</a>.</p>',
    ]
    page = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>"
        + "\n".join(s for s in sections if s)
        + "</body></html>\n"
    )
    index = out_dir / "index.html"
    index.write_text(page, encoding="utf-8")
    return index
