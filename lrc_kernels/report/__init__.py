"""HTML + PNG report of a set of routing traces (the ``lrc report`` command).

The report holds the paper's views of local routing consistency, for several models side
by side: SRP against the segment length m (Figure 4 style), hit rate against the cache
ratio rho for the SCH oracle and LRU / LFU / Belady caches with rho = 2 marked, a
per-layer SRP heatmap, per-domain bars, the numbers behind every figure as tables, and the
trace metadata. ``index.html`` embeds the figures, so the one file can be mailed around;
the PNGs and a ``report.json`` of tidy rows are written next to it.

Two steps: :func:`compute_results` computes every number with the public API (one
:class:`ModelResults` per trace: ``_compute``), :func:`render` draws the figures
(``_figures``) and writes the tables (``_tables``) and files (``_render``).
:func:`write_report` does both and takes trace paths, :class:`~lrc_kernels.Trace` objects
or :class:`lrc_kernels.io.TraceSource` objects.

Matplotlib is imported only when a figure is drawn; figures are plain
``matplotlib.figure.Figure`` objects rendered by the Agg canvas (no display, no pyplot, and
the caller's matplotlib backend is left alone).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ._compute import MIN_PLOT_M as MIN_PLOT_M
from ._compute import POLICY_ORDER as POLICY_ORDER
from ._compute import RHO_MARK as RHO_MARK
from ._compute import RHO_TABLE as RHO_TABLE
from ._compute import ModelResults, compute_results
from ._figures import DS_MEANING as DS_MEANING
from ._figures import DS_SYNTHETIC as DS_SYNTHETIC
from ._figures import POLICY_STYLE as POLICY_STYLE
from ._figures import figure_domains, figure_hit_vs_rho, figure_layer_heatmap, figure_srp_vs_m
from ._render import _out_dir, render, report_rows

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
    all_policies: bool = False,
    deployment: dict | None = None,
) -> Path:
    """Compute the metrics of ``sources`` and write the report into directory ``out``.

    Parameters
    ----------
    sources : sequence of path, Trace or lrc_kernels.io.TraceSource
        One trace per model: trace files (or shard directories), in-memory
        :class:`~lrc_kernels.Trace` objects, or sources from
        :func:`lrc_kernels.io.open_sources`.
    out : path
        Output directory (created if missing). Receives ``index.html`` (self-contained),
        ``srp_vs_m.png``, ``hit_vs_rho.png``, ``layer_srp.png``, ``domains.png`` (when any
        trace has domain labels) and ``report.json``.
    ms, sch_m, bootstrap, backend, progress, all_policies
        See :func:`compute_results`.
    title : str, optional
        Page title (default: the model names).
    deployment : dict, optional
        ``expert_bytes``, ``link_gbps`` and ``base_ms`` of the "Deployment" section's
        decode-speed predictions (default: a Qwen3-30B-A3B-sized expert at 4.5 bits over
        25 GB/s, 10 ms per token with every expert resident: assumptions, not
        measurements).

    Returns
    -------
    Path
        The path of ``index.html``.

    Examples
    --------
    >>> write_report(["a.lrc.arrow", "b.lrc.arrow"], "report/")  # doctest: +SKIP
    PosixPath('report/index.html')
    """
    out_dir = _out_dir(out)
    models = compute_results(
        sources,
        ms=ms,
        sch_m=sch_m,
        bootstrap=bootstrap,
        backend=backend,
        progress=progress,
        all_policies=all_policies,
    )
    return render(models, out_dir, title=title, bootstrap=bootstrap, deployment=deployment)
