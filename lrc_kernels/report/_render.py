"""The report's files: ``index.html`` (figures embedded), the PNGs and ``report.json``."""

from __future__ import annotations

import base64
import datetime as _dt
import html
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ._compute import POLICY_ORDER, RHO_MARK, ModelResults
from ._deployment import deployment_rows, deployment_section, figure_deployment
from ._figures import (
    DS_MEANING,
    DS_SYNTHETIC,
    figure_domains,
    figure_hit_vs_rho,
    figure_layer_heatmap,
    figure_srp_vs_m,
)
from ._tables import (
    _domain_table,
    _hit_table,
    _layer_table,
    _meta_table,
    _policy_table,
    _srp_table,
    _summary_table,
)

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
        "policies": [],
        "policies_shared": [],
        "srp_domain": [],
        "sch_domain": [],
    }
    for r in models:
        out["traces"].append(dict(r.info))
        out["srp"].extend(rows(r.name, r.srp_model.to_pandas()))
        out["srp_layer"].extend(rows(r.name, r.srp_layer.to_pandas()))
        for pol in POLICY_ORDER:
            out["curves"].extend(rows(r.name, r.curves[pol].to_pandas()))
        for c in r.policies.values():
            out["policies"].extend(rows(r.name, c.to_pandas()))
        for c in r.shared.values():
            out["policies_shared"].extend(rows(r.name, c.to_pandas()))
        if r.srp_domain is not None:
            out["srp_domain"].extend(rows(r.name, r.srp_domain.to_pandas()))
            out["sch_domain"].extend(rows(r.name, r.sch_domain.to_pandas()))
    return out


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
    deployment: dict | None = None,
) -> Path:
    """Draw the figures and write ``index.html``, the PNGs and ``report.json`` into out_dir.

    ``deployment`` sets the "Deployment" section's ``expert_bytes``, ``link_gbps`` and
    ``base_ms`` (defaults: ``report._deployment.DEFAULT_DEPLOYMENT``)."""
    out_dir = _out_dir(out_dir)
    names = [r.name for r in models]
    title = title or "Local routing consistency: " + ", ".join(names)
    figs = _figures(models, bootstrap)
    figs.append(
        (
            "deployment.png",
            figure_deployment(models, deployment),
            "predicted decode tokens/s against memory budget",
            "Predicted decode tokens/s against the fast memory for routed experts, optimal "
            "per-layer split per policy (dotted: LRU, uniform split).",
        )
    )
    pngs = {}
    for name, fig, _, _ in figs:
        png = _png_bytes(fig)
        (out_dir / name).write_bytes(png)
        pngs[name] = png
    rows = report_rows(models)
    rows["deployment"] = deployment_rows(models, deployment)
    (out_dir / "report.json").write_text(json.dumps(rows, indent=1, allow_nan=False) + "\n")
    fig_html = {name: _figure_html(pngs[name], name, alt, cap) for name, _, alt, cap in figs}
    page = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>"
        + "\n".join(s for s in _sections(models, title, fig_html, deployment) if s)
        + "</body></html>\n"
    )
    index = out_dir / "index.html"
    index.write_text(page, encoding="utf-8")
    return index


def _figures(models: Sequence[ModelResults], bootstrap: int) -> list[tuple[str, Any, str, str]]:
    """(file name, figure, alt text, caption) of every figure the report shows."""
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
    return figs


def _sections(
    models: Sequence[ModelResults],
    title: str,
    fig_html: dict[str, str],
    deployment: dict | None = None,
) -> list[str]:
    """The parts of the page body, in order (empty ones are left out)."""
    from .. import __version__

    notes = "".join(
        f'<p class="note">{html.escape(r.name)}: {html.escape(n)}</p>'
        for r in models
        for n in r.notes
    )
    created = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
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
        "<h2>Replacement policies</h2>",
        "<p>What offloading runtimes run, against the bounds: FIFO, Clock, SIEVE, S3-FIFO "
        "and ARC (libCacheSim's defaults), LFU with decayed or windowed counts, static "
        "placements of the most used experts (in hindsight, or from a calibration prefix) "
        "and LRU with a pinned hot half (definitions in the docs, Metrics). Hit rates are "
        "layer means; a shared cache holds every layer's experts (C = ρ·L·k). These "
        "policies need one simulation per cache size, so the report runs them at ρ = 2 "
        "unless made with <code>--all-policies</code>.</p>",
        _policy_table(models),
        "<h2>SRP per layer</h2>",
        fig_html["layer_srp.png"],
        _layer_table(models),
        "<h2>Per domain</h2>",
        fig_html.get("domains.png", ""),
        _domain_table(models),
        *deployment_section(models, deployment, fig_html["deployment.png"]),
        '<p class="sub">All numbers as tidy rows: <a href="report.json">report.json</a>.</p>',
    ]
    return sections
