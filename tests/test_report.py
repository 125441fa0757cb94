"""The HTML/PNG report: figures carry titled axes and the API's numbers; files are complete."""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import lrc_kernels as lk
from lrc_kernels import cli
from lrc_kernels._spec import ALL_POLICIES, SIZE_POLICIES

mpl = pytest.importorskip("matplotlib")
from lrc_kernels import report  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("rep")
    a = lk.synthetic_trace(9, [80, 64, 96, 50, 70, 64, 40, 90, 64], 3, 16, 2, stay=0.8,
                           seed=5, domains=["web", "code", "math"])  # fmt: skip
    a = lk.Trace(a.experts, a.offsets, num_experts=16, domains=a.domains, meta={"model": "hi"})
    b = lk.synthetic_trace(6, 48, 2, 12, 3, stay=0.1, seed=6)
    b = lk.Trace(b.experts, b.offsets, num_experts=12, meta={"model": "lo", "layer_ids": [1, 3]})
    pa, pb = d / "hi.lrc.arrow", d / "lo.lrc.arrow"
    lk.write_trace(pa, a)
    lk.write_trace(pb, b)
    return {"a": pa, "b": pb, "A": lk.read_trace(pa), "B": lk.read_trace(pb), "dir": d}


@pytest.fixture(scope="module")
def models(files):
    sources = cli.open_sources([str(files["a"]), str(files["b"])])
    return report.compute_results(sources, ms=[1, 4, 16, 64], sch_m=16, bootstrap=30)


def _titled(ax):
    assert ax.get_xlabel().strip() and ax.get_ylabel().strip(), "axes must be labelled"


# -------------------------------------------------------------------------- numbers
def test_results_are_the_apis(models, files):
    hi, lo = models
    assert (hi.name, lo.name) == ("hi", "lo")
    A = files["A"]
    ref = lk.srp(A, [1, 4, 16, 64], bootstrap=30)
    np.testing.assert_array_equal(hi.srp_model.value, ref.value)
    np.testing.assert_array_equal(hi.srp_model.ci[0], ref.ci[0])
    np.testing.assert_array_equal(
        hi.srp_layer.value, lk.srp(A, [1, 4, 16, 64], level="layer").value
    )
    for pol in report.POLICY_ORDER:
        c = lk.hit_curve(A, pol, m=16 if pol == "sch" else None)
        np.testing.assert_array_equal(hi.curves[pol].rates, c.rates)
    assert hi.srp_domain is not None and lo.srp_domain is None
    np.testing.assert_array_equal(hi.srp_domain.value, lk.srp(A, 16, by_domain=True).value)
    assert hi.hit_at("sch", 2) == float(np.mean(lk.sch(A, 16).at(2)))
    assert hi.load_balance == lk.load_balance(A, 16)
    assert hi.domain_specialization == lk.domain_specialization(A, 16)[0]
    assert lo.domain_specialization is None and np.isfinite(lo.load_balance)


def test_paths_and_traces_give_the_sources_numbers(models, files):
    """write_report / compute_results take paths and Trace objects, not only sources."""
    by_path = report.compute_results([files["a"], str(files["b"])], ms=[1, 4, 16, 64], sch_m=16)
    by_trace = report.compute_results([files["A"], files["B"]], ms=[1, 4, 16, 64], sch_m=16)
    assert [r.name for r in by_path] == [r.name for r in by_trace] == ["hi", "lo"]
    for got_p, got_t, want in zip(by_path, by_trace, models, strict=True):
        assert got_p.info == want.info
        for key in ("model", "num_experts", "top_k", "num_layers", "sequences", "tokens"):
            assert got_t.info[key] == want.info[key]
        assert got_t.info["file_bytes"] is None and got_t.info["files"] == 0
        for got in (got_p, got_t):
            np.testing.assert_array_equal(got.srp_layer.value, want.srp_layer.value)
            for pol in report.POLICY_ORDER:
                np.testing.assert_array_equal(got.curves[pol].rates, want.curves[pol].rates)
            assert got.load_balance == want.load_balance
            assert got.domain_specialization == want.domain_specialization
    unnamed = lk.Trace(files["B"].experts, files["B"].offsets, num_experts=12)
    (r1, r2) = report.compute_results([unnamed, unnamed], ms=[4])
    assert (r1.name, r2.name) == ("trace 1", "trace 2")
    with pytest.raises(TypeError, match="item 1 has type int"):
        report.compute_results([3])


def test_model_level_pooled_from_layers_is_bit_identical(files):
    B = files["B"]
    (r,) = report.compute_results(cli.open_sources([str(files["b"])]), ms=[1, 3, 16, 64])
    ref = lk.srp(B, [1, 3, 16, 64], level="model")
    assert r.srp_model.level == "model" and r.srp_model.ci is None
    for name in ("value", "threshold", "ratio", "windows"):
        np.testing.assert_array_equal(getattr(r.srp_model, name), getattr(ref, name))
    for got, want in zip(r.srp_model.histogram, ref.histogram, strict=True):
        np.testing.assert_array_equal(got, want)


# -------------------------------------------------------------------------- figures
def test_srp_vs_m_figure(models):
    fig = report.figure_srp_vs_m(models)
    (ax,) = fig.axes
    _titled(ax)
    assert "m" in ax.get_xlabel() and "SRP" in ax.get_ylabel() and ax.get_title()
    assert ax.get_xscale() == "log"
    lines = ax.get_lines()
    assert [ln.get_label() for ln in lines] == ["hi", "lo"]
    for ln, r in zip(lines, models, strict=True):
        x, y = ln.get_data()
        # m = 1 (SRP 1 by definition) and m without windows are not drawn
        ok = (np.asarray(r.srp_model.windows) > 0) & (np.asarray(r.ms) >= 2)
        assert 1 not in x and ok.sum() < len(r.ms)
        np.testing.assert_array_equal(x, np.asarray(r.ms)[ok])
        np.testing.assert_array_equal(y, np.asarray(r.srp_model.value)[ok])
    # m = 64 exceeds model "lo"'s 48-token sequences: not plotted, and said in a note
    assert 64 not in lines[1].get_data()[0]
    assert any("exceed" in n for n in models[1].notes)
    assert len(ax.collections) == 2  # one bootstrap band per model


def test_hit_vs_rho_figure_marks_rho_2(models):
    fig = report.figure_hit_vs_rho(models)
    axes = [ax for ax in fig.axes]
    assert len(axes) == 2
    for ax, r in zip(axes, models, strict=True):
        assert ax.get_title() == r.name
        assert "ρ" in ax.get_xlabel()
        lines = {ln.get_label(): ln for ln in ax.get_lines()}
        for pol, label in (("sch", "SCH (m=16)"), ("lru", "LRU"), ("lfu", "LFU"),
                           ("belady", "Belady")):  # fmt: skip
            x, y = lines[label].get_data()
            rho, h = r.mean_curve(pol)
            np.testing.assert_array_equal(x[1:], rho)
            np.testing.assert_allclose(y[1:], h, rtol=0, atol=1e-12)
            assert x[0] == 0 and y[0] == 0
        # the rho = 2 marker: a vertical line at x = 2 and the SCH point on it
        vlines = [ln for ln in ax.get_lines() if np.all(np.asarray(ln.get_xdata()) == 2.0)]
        assert vlines, "rho = 2 must be marked"
        texts = [t.get_text() for t in ax.texts]
        assert any(t.startswith("ρ=2: SCH ") for t in texts)
        assert f"{r.hit_at('sch', 2):.3f}" in " ".join(texts)
        assert ax.get_legend() is None  # the one legend is the figure's, below the panels
    _titled(axes[0])
    assert fig.get_suptitle()
    (legend,) = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == [
        "SCH (m=16)", "Belady", "LRU", "LFU", "ρ = 2"
    ]  # fmt: skip


def _label_box(fig, ax):
    from matplotlib.text import Text

    renderer = fig.canvas.get_renderer()
    fig.draw_without_rendering()
    (label,) = [t for t in ax.texts if t.get_text().startswith("ρ=")]
    return Text.get_window_extent(label, renderer), renderer


@pytest.mark.parametrize("stay", [0.05, 0.5, 0.9, 0.99])
def test_rho_2_label_crosses_no_curve(tmp_path, stay):
    """Measured on the drawn figure: the label's box lies in its panel and no curve, nor the
    marker, passes through it (curves of very different shapes)."""
    tr = lk.synthetic_trace(6, 64, 2, 16, 2, stay=stay, seed=3)
    p = tmp_path / "t.lrc.arrow"
    lk.write_trace(p, tr)
    models = report.compute_results(cli.open_sources([str(p), str(p)]), ms=[2, 4])
    fig = report.figure_hit_vs_rho(models)
    fig.savefig(tmp_path / "f.png")  # the layout of the saved picture
    for ax in fig.axes:
        box, renderer = _label_box(fig, ax)
        frame = ax.get_window_extent(renderer)
        assert frame.x0 <= box.x0 and box.x1 <= frame.x1
        assert frame.y0 <= box.y0 and box.y1 <= frame.y1
        for ln in ax.get_lines():
            path = ln.get_transform().transform_path(ln.get_path())
            assert not path.intersects_bbox(box, filled=False), ln.get_label()
            assert not any(box.contains(x, y) for x, y in path.vertices), ln.get_label()


def test_layer_heatmap_figure(models):
    fig = report.figure_layer_heatmap(models)
    panels = [ax for ax in fig.axes if ax.get_images()]
    assert len(panels) == 2
    for ax, r in zip(panels, models, strict=True):
        _titled(ax)
        arr = np.ma.filled(ax.get_images()[0].get_array(), np.nan)
        want = np.asarray(r.srp_layer.value, dtype=float).T.copy()
        want[:, np.asarray(r.srp_layer.windows) == 0] = np.nan
        keep = np.asarray(r.ms) >= 2  # m = 1 (SRP 1 by definition) is left out
        np.testing.assert_array_equal(arr, want[:, keep])
        assert [t.get_text() for t in ax.get_xticklabels()] == [str(m) for m in r.ms if m >= 2]
    # model "lo" has layer ids: they label its rows
    assert [t.get_text() for t in panels[1].get_yticklabels()] == ["1", "3"]
    assert any(ax.get_ylabel() == "SRP" for ax in fig.axes)  # the colour bar


def test_domain_figure(models, files):
    fig = report.figure_domains(models)
    ax1, ax2, ax3 = fig.axes
    for ax in (ax1, ax2):
        _titled(ax)
        assert ax.get_title()
        assert [t.get_text() for t in ax.get_xticklabels()] == ["web", "code", "math"]
    heights = [p.get_height() for p in ax1.patches]
    np.testing.assert_array_equal(heights, lk.srp(files["A"], 16, by_domain=True).value)
    sch = lk.sch(files["A"], 16, by_domain=True).at(2).mean(axis=-1)
    np.testing.assert_allclose([p.get_height() for p in ax2.patches], sch, rtol=0, atol=1e-12)
    # domain specialisation: the value, and what it means, in the figure itself
    (bar,) = ax3.patches
    assert bar.get_height() == lk.domain_specialization(files["A"], 16)[0]
    assert "Domain specialisation" in ax3.get_title()
    assert "0 = every expert is used alike in every domain" in ax3.get_xlabel().replace("\n", " ")
    assert not ax3.texts[1:]  # the value on the bar, no synthetic note: "hi" has own meta
    assert ax1.get_legend() is None and len(fig.legends) == 1  # one legend for all panels
    assert report.figure_domains(models[1:]) is None  # no labels, no figure


def test_domain_figure_says_why_synthetic_traces_score_about_0_7(tmp_path):
    tr = lk.synthetic_trace(8, 64, 2, 16, 2, stay=0.5, seed=3, domains=["a", "b"])
    p = tmp_path / "syn.lrc.arrow"
    lk.write_trace(p, tr)  # keeps the generator's metadata
    (r,) = report.compute_results(cli.open_sources([str(p)]), ms=[2, 4], sch_m=4)
    assert r.synthetic
    fig = report.figure_domains([r])
    note = " ".join(t.get_text().replace("\n", " ") for t in fig.axes[2].texts)
    assert "own random popularity ranking" in note and "about 0.7" in note
    page = report.render([r], tmp_path / "out").read_text()
    assert "Why synthetic traces score about 0.7" in page


def _png_pixels(data: bytes) -> np.ndarray:
    import io

    from matplotlib import image

    return image.imread(io.BytesIO(data), format="png")


# ---------------------------------------------------------------------- whole report
def test_write_report_files(models, files, tmp_path):
    out = tmp_path / "r"
    index = report.render(models, out, bootstrap=30)
    assert index == out / "index.html"
    names = {p.name for p in out.iterdir()}
    assert names == {"index.html", "report.json", "srp_vs_m.png", "hit_vs_rho.png",
                     "layer_srp.png", "domains.png", "deployment.png"}  # fmt: skip
    for png in ("srp_vs_m.png", "hit_vs_rho.png", "layer_srp.png", "domains.png"):
        data = (out / png).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 10_000
        px = _png_pixels(data)
        assert px.shape[0] > 250 and px.shape[1] > 500 and float(px[..., :3].std()) > 0.05
    # the hit-rate figure shows the SCH curve in its red
    px = _png_pixels((out / "hit_vs_rho.png").read_bytes())[..., :3]
    red = (px[..., 0] > 0.75) & (px[..., 1] < 0.3) & (px[..., 2] < 0.3)
    assert red.sum() > 500
    page = index.read_text()
    imgs = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(imgs) == 5  # self-contained: every figure embedded
    assert base64.b64decode(imgs[1]) == (out / "hit_vs_rho.png").read_bytes()
    for needle in ("<h2>Traces</h2>", "hi", "lo", "web", "bytes / activation", "ρ=2"):
        assert needle in page
    glance = page[page.index("At a glance") : page.index("<h2>Traces</h2>")]
    hi = models[0]
    for v in (hi.hit_at("sch", 2), 100 * hi.load_balance, hi.domain_specialization):
        assert f"{v:.4f}" in glance
    ref = lk.srp(files["A"], [1, 4, 16, 64])
    assert f"{float(ref.value[2]):.4f}" in page
    rows = json.loads((out / "report.json").read_text())
    assert set(rows) == {
        "traces", "srp", "srp_layer", "curves", "policies", "policies_shared", "srp_domain",
        "sch_domain", "deployment",
    }  # fmt: skip
    # the per-size policies at rho = 2 per layer: rows, and their layer mean in the table
    fifo = hi.policies["fifo"].to_pandas()
    fifo.insert(0, "model", "hi")
    got = [r for r in rows["policies"] if r["model"] == "hi" and r["policy"] == "fifo"]
    assert got == fifo.to_dict(orient="records") and {r["rho"] for r in got} == {2.0}
    want = lk.hit_curve(files["A"], "fifo", rho=[2]).rates.mean()
    assert hi.hit_at("fifo", 2) == want
    assert f"{want:.4f}" in page[page.index("Replacement policies") :]
    assert rows["policies_shared"] == []
    assert [r["srp"] for r in rows["srp"] if r["model"] == "hi"] == [float(v) for v in ref.value]
    # the rows are the results' to_pandas() frames with the model in front
    lru = hi.curves["lru"].to_pandas()
    lru.insert(0, "model", "hi")
    got = [r for r in rows["curves"] if r["model"] == "hi" and r["policy"] == "lru"]
    assert got == lru.to_dict(orient="records")
    dom = hi.srp_domain.to_pandas()
    dom.insert(0, "model", "hi")
    assert rows["srp_domain"] == dom.to_dict(orient="records")
    assert len(rows["curves"]) == 4 * (3 * 16 + 2 * 12)


def test_report_all_policies(tmp_path):
    tr = lk.synthetic_trace(3, 40, 2, 8, 2, seed=4)
    (r,) = report.compute_results([tr], ms=[2, 4], sch_m=4, all_policies=True)
    assert set(r.policies) == set(SIZE_POLICIES) and set(r.shared) == set(ALL_POLICIES)
    assert r.policies["arc"].sizes.tolist() == list(range(1, 9))  # every size per layer
    # shared cache on the table's ratios that give whole sizes (C = rho * L * k <= L * E)
    assert r.shared["arc"].sizes.tolist() == [2, 4, 6, 8, 12, 16]
    want = lk.hit_curve(tr, "pinned-lru", level="model", sizes=[8]).rates[0]
    assert r.hit_at("pinned-lru", 2, shared=True) == want
    index = report.render([r], tmp_path / "out")
    assert "shared ρ=4" in index.read_text()


def test_report_rho_2_impossible_is_a_note(tmp_path):
    tr = lk.synthetic_trace(4, 40, 2, 5, 3, seed=2)  # 2k = 6 > E = 5
    p = tmp_path / "t.lrc.arrow"
    lk.write_trace(p, tr)
    (r,) = report.compute_results(cli.open_sources([str(p)]), ms=[2, 8], sch_m=4)
    assert r.ms == [2, 4, 8]  # the summary's SRP at m = sch_m is always computed
    assert any("rho = 2" in n for n in r.notes)
    assert np.isnan(r.hit_at("sch", 2))
    fig = report.figure_hit_vs_rho([r])
    assert not fig.axes[0].texts  # nothing marked at an impossible size
    index = report.render([r], tmp_path / "out")
    assert "rho = 2 needs a cache of 2k = 6" in index.read_text()
    assert not (tmp_path / "out" / "domains.png").exists()


def test_lrc_report_subprocess(files, tmp_path):
    out = tmp_path / "report"
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run(
        [sys.executable, "-m", "lrc_kernels", "report", str(files["a"]), str(files["b"]),
         "--out", str(out), "--m", "2", "8", "32", "--title", "Two toys"],
        capture_output=True, text=True, env=env, timeout=300, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(out / "index.html")
    page = (out / "index.html").read_text()
    assert "<title>Two toys</title>" in page
    for png in ("srp_vs_m.png", "hit_vs_rho.png", "layer_srp.png", "domains.png"):
        assert (out / png).stat().st_size > 10_000


def test_report_on_shipped_traces(tmp_path):
    """``lrc report traces/*.lrc.arrow --out DIR``, the README's first command."""
    shipped = sorted((ROOT / "traces").glob("*.lrc.arrow"))
    if not shipped:
        pytest.skip("no sample traces in traces/")
    out = tmp_path / "report"
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run(
        [sys.executable, "-m", "lrc_kernels", "report", *map(str, shipped), "--out", str(out),
         "--m", "4", "16"],
        capture_output=True, text=True, env=env, timeout=300, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    rows = json.loads((out / "report.json").read_text())
    srp = [r["srp"] for r in rows["srp"]]
    assert srp == [float(v) for p in shipped for v in lk.srp(str(p), [4, 16]).value]
    for png in ("srp_vs_m.png", "hit_vs_rho.png", "layer_srp.png"):
        assert (out / png).read_bytes().startswith(PNG_MAGIC)


def test_deployment_section_is_the_planners(models, tmp_path):
    out = tmp_path / "dep"
    dep = {"expert_bytes": 10**6, "link_gbps": 4.0, "base_ms": 2.0}
    index = report.render(models, out, deployment=dep)
    page = index.read_text()
    assert "<h2>Deployment</h2>" in page and "1,000,000 bytes" in page
    rows = json.loads((out / "report.json").read_text())["deployment"]
    hi = models[0]
    got = [r for r in rows if r["model"] == "hi" and r["policy"] == "lru" and r["share"] == 0.25]
    assert len(got) == 1
    c = hi.curves["lru"]
    plan = lk.plan_budget(c, 12, shared=False)  # 25 % of 3 x 16 experts
    assert got[0]["slots"] == 12 and got[0]["hit_rate_optimal"] == plan.hit_rate
    want = lk.predict_decode(plan.hit_rate, num_layers=3, top_k=2, expert_bytes=10**6,
                             link_gbps=4.0, base_ms=2.0)  # fmt: skip
    assert got[0]["tokens_per_s_optimal"] == pytest.approx(want)
    assert got[0]["tokens_per_s_optimal"] >= got[0]["tokens_per_s_uniform"]
    with pytest.raises(ValueError, match="unknown deployment settings"):
        report.render(models, tmp_path / "bad", deployment={"link": 3})
