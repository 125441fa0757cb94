"""``lrc curves``: hit rate against cache ratio for every cache policy of ``_spec``."""

from __future__ import annotations

import argparse
from typing import Any

import lrc_kernels as lk

from .._spec import ALL_POLICIES, POLICIES, SIZE_POLICIES
from ._args import (
    _add_cache_options,
    _add_common,
    _add_compute,
    _add_output,
    _add_policy_params,
    _add_traces,
    _positive_int,
    _ratio,
    policy_params,
)
from ._common import (
    EXIT_OK,
    CLIError,
    _fmt_rho,
    _layer_mean,
    _valid_rhos,
    client_of,
    metric_inputs,
)
from ._output import _emit, _fmt, _model_frame, _rows, format_table

CURVE_RHO = (0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0)


EPILOG = """\
Hit rate against cache ratio. Stack policies (every size from one pass): lru, lfu, belady
(optimal offline), sch (m-token oracle); the default is these four. Per-size policies (one
simulation per size): fifo, clock, sieve, s3fifo, arc (libCacheSim defaults), lfu-decay
(--decay), lfu-window (--window), static-oracle, static-prefix (--prefix), pinned-lru
(--pinned). At --level model a per-size policy runs on a grid: --sizes, --rho, or by default
the table's ratios 0.5 .. 8. Tidy output has one row per cache size (or per --rho / --sizes);
the table shows the layer mean at common ratios.

examples:
  lrc curves traces/model.lrc.arrow
  lrc curves model.lrc.arrow --policy lru sch --m 16 --csv -o curves.csv
  lrc curves model.lrc.arrow --policy lru fifo pinned-lru --pinned 0.25 --level model
"""


def add_parser(sub: Any, fmt: type[argparse.HelpFormatter]) -> None:
    """Add ``lrc curves`` and its options to the sub-command parsers ``sub``."""
    p = sub.add_parser(
        "curves",
        help="hit rate against cache ratio for every cache policy",
        description="Expert-cache hit curves.",
        epilog=EPILOG,
        formatter_class=fmt,
    )
    _add_traces(p)
    p.add_argument(
        "--policy",
        nargs="+",
        choices=ALL_POLICIES,
        default=list(POLICIES),
        metavar="POLICY",
        help=f"replacement policies, of: {', '.join(ALL_POLICIES)} (default: the four stack "
        "policies lru lfu belady sch)",
    )
    p.add_argument(
        "--m", type=_positive_int, default=16, help="future window of the SCH policy (default: 16)"
    )
    p.add_argument(
        "--rho",
        nargs="+",
        type=_ratio,
        default=None,
        metavar="RHO",
        help="only these cache ratios (default: every cache size)",
    )
    p.add_argument(
        "--sizes",
        nargs="+",
        type=_positive_int,
        default=None,
        metavar="C",
        help="only these cache sizes (instead of --rho)",
    )
    _add_policy_params(p)
    _add_cache_options(p)
    _add_compute(p)
    _add_output(p)
    _add_common(p)
    p.set_defaults(func=cmd_curves)


def _grid(args: argparse.Namespace, src: Any, policy: str) -> dict[str, Any]:
    """``sizes=`` / ``rho=`` of one call: the user's, else at model level for a per-size
    policy the table's ratios that give whole sizes."""
    if args.sizes is not None and args.rho is not None:
        raise CLIError("give --sizes or --rho, not both")
    if args.sizes is not None:
        return {"sizes": args.sizes}
    if args.rho is not None:
        return {"rho": args.rho}
    if policy in SIZE_POLICIES and args.level == "model":
        r = src.reader
        unit, n = r.top_k * r.num_layers, r.num_experts * r.num_layers
        return {"rho": [x for x in CURVE_RHO if float(x * unit).is_integer() and x * unit <= n]}
    return {}


def _label(p: str, args: argparse.Namespace, curves: list[Any]) -> str:
    """Column name: the policy, with SCH's m or the parameter the curves were run with."""
    if p == "sch":
        return f"sch(m={args.m})"
    params = next((c.params for c in curves if c.policy == p), {})
    return "".join([p, *(f"({k}={v:g})" for k, v in params.items())])


def cmd_curves(args: argparse.Namespace) -> int:
    sources, prog = metric_inputs(args)
    results = []
    shown: dict[str, list[float]] = {}
    policies = list(dict.fromkeys(args.policy))
    params = policy_params(args, policies)
    for s in sources:
        for pol in policies:
            with prog.pass_over(s, pol.upper()) as bar:
                curve = lk.hit_curve(
                    s.path,
                    pol,
                    m=args.m if pol == "sch" else None,
                    level=args.level,
                    warm_start=not args.cold_start,
                    **_grid(args, s, pol),
                    **params[pol],
                    by_domain=args.by_domain,
                    backend=args.backend,
                    progress=bar,
                    client=client_of(args),
                )
            results.append((s.name, curve, None))
            if args.sizes is not None:
                shown[s.name] = [c / curve.per_unit for c in args.sizes]
            else:
                shown[s.name] = _valid_rhos(curve, args.rho, CURVE_RHO)
    rows = [r for name, c, rhos in results for r in _rows(name, c._columns(rhos))]

    def human() -> str:
        names = [_label(p, args, [c for _, c, _ in results]) for p in policies]
        header = ["model"] + (["domain"] if args.by_domain else []) + ["rho", "C"] + names
        means = _layer_mean(rows, ("model", "domain", "policy", "rho"))
        sizes = {(r["model"], r["rho"]): r["cache_size"] for r in rows}
        if args.sizes is not None:  # rho of each size exactly as the rows computed it
            shown.update({m: sorted({r for (mm, r) in sizes if mm == m}) for m in shown})
        groups: list[tuple] = []
        for r in rows:
            if (r["model"], r["domain"]) not in groups:
                groups.append((r["model"], r["domain"]))
        body = []
        for model, dom in groups:
            for rho in shown[model]:
                C = sizes.get((model, rho))
                line = [model] + ([dom] if args.by_domain else []) + [_fmt_rho(rho), C]
                line += [_fmt(means.get((model, dom, p, rho))) for p in policies]
                body.append(line)
        numeric = [h not in ("model", "domain") for h in header]
        note = (
            "\n(layer level: hit rates averaged over the MoE layers; C = rho * k)"
            if args.level == "layer"
            else "\n(model level: one cache; C = rho * L * k)"
        )
        return format_table(header, body, numeric) + note

    _emit(args, lambda: _model_frame([(n, c.to_pandas(rho)) for n, c, rho in results]), human)
    return EXIT_OK
