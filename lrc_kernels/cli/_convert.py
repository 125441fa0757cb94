"""``lrc convert``: numpy routing arrays, safetensors top-k files or trace shards to one
trace file (through :mod:`lrc_kernels.convert` and :mod:`lrc_kernels.io`)."""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path
from typing import Any

import lrc_kernels as lk

from ._args import _add_common, _positive_int
from ._common import EXIT_OK, CLIError
from ._output import _human_bytes

EPILOG = """\
Writes one trace file from (through lrc_kernels.convert):
  .npz          an id array named experts / indices / expert_ids / topk_ids / ids,
                (T, L, k) or (S, T, L, k), optional offsets, scores or weights,
                domains, moe_layer_ids, token_ids
  .npy          one id array (T, L, k) or (S, T, L, k); needs --num-experts
  .safetensors  the paper code's per-layer top-k files (a directory of them, one per
                layer, or the files in layer order); needs --num-experts
  .lrc.arrow    trace files or shard directories: merged and recompressed
  .jsonl .csv   routing logs, one record per (request, position, layer) with the
                top-k experts (docs/trace-format.md, "Routing logs"); needs
                --num-experts; one input alone streams to --out with bounded memory
Several inputs are concatenated in order; they must agree on E, L and k.
--num-experts is required unless the input stores it: the highest experts may never
be chosen, so E cannot be inferred from the ids.

examples:
  lrc convert routing.npz --out model.lrc.arrow --num-experts 64 --split 512 --model my-moe
  lrc convert topk_dir/ --out paper.lrc.arrow --num-experts 64
  lrc convert shards/ --out merged.lrc.arrow
"""


def add_parser(sub: Any, fmt: type[argparse.HelpFormatter]) -> None:
    """Add ``lrc convert`` and its options to the sub-command parsers ``sub``."""
    p = sub.add_parser(
        "convert",
        help="numpy routing arrays (or trace shards) to a trace file",
        description="Write a trace file (.lrc.arrow) from numpy arrays or existing trace files.",
        epilog=EPILOG,
        formatter_class=fmt,
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT", help=".npz/.npy arrays or trace files")
    p.add_argument("--out", required=True, metavar="FILE", help="trace file to write")
    p.add_argument(
        "--num-experts",
        type=_positive_int,
        default=None,
        metavar="E",
        help="experts per layer; required unless the input stores it (.npz with "
        "num_experts, trace files); never guessed from the ids",
    )
    p.add_argument(
        "--split",
        type=_positive_int,
        default=None,
        metavar="T",
        help="cut sequences into pieces of T tokens (the paper uses 512)",
    )
    p.add_argument("--model", default=None, help="model name to store in the metadata")
    p.add_argument(
        "--max-open",
        type=_positive_int,
        default=1,
        metavar="N",
        help="routing logs: requests buffered at once (default 1: records grouped by request)",
    )
    p.add_argument(
        "--domain",
        default=None,
        help="domain label for every sequence of numpy inputs and of unlabelled trace files",
    )
    p.add_argument("--no-weights", action="store_true", help="do not store gate weights")
    p.add_argument(
        "--unwrap-int8",
        action="store_true",
        help="safetensors int8 ids: read negative values as ids 128..255 (E <= 256)",
    )
    p.add_argument(
        "--allow-incomplete",
        action="store_true",
        help="trace files whose writer was interrupted: convert their complete batches",
    )
    _add_common(p)
    p.set_defaults(func=cmd_convert)


# metadata keys a trace file writer sets itself (not carried over when converting)
_FILE_KEYS = (
    "source_file",
    "source_files",
    "format",
    "format_version",
    "producer",
    "producer_version",
    "created",
    "weights_dtype",
    "token_ids",
    "num_experts",
    "top_k",
    "num_layers",
)


def _need_e(exc: Exception, path: Path) -> CLIError:
    """A converter's error as a CLI error, pointing at --num-experts where that is the fix."""
    msg = str(exc)
    if "num_experts" in msg and "--num-experts" not in msg:
        msg += " (lrc convert: give --num-experts E)"
    if str(path) not in msg:
        msg = f"{path}: {msg}"
    return CLIError(msg)


def _load_input(path: Path, args: argparse.Namespace) -> tuple[Any, Any]:
    """(Trace, token ids or None) of one convert input, through :mod:`lrc_kernels.convert`."""
    import numpy as np

    from .. import convert
    from .. import io as trace_io

    weights = not args.no_weights
    if path.suffix == ".npz":
        try:
            tr = convert.from_npz(
                path, num_experts=args.num_experts, weights=weights, domain=args.domain
            )
        except (ValueError, TypeError) as exc:
            raise _need_e(exc, path) from None
        with np.load(path, allow_pickle=False) as z:
            tok = z["token_ids"] if "token_ids" in z else None
        if tok is not None and tok.size != tr.num_tokens:
            tok = None
        return tr, tok
    if path.suffix == ".npy":
        if args.num_experts is None:
            raise CLIError(f"{path}: a bare .npy array needs --num-experts E")
        ids = np.load(path, allow_pickle=False)
        try:
            tr = convert.from_arrays(ids, num_experts=args.num_experts, domains=args.domain)
        except (ValueError, TypeError) as exc:
            raise _need_e(exc, path) from None
        return tr, None
    if _is_routing_log(path):
        if args.num_experts is None:
            raise CLIError(f"{path}: a routing log needs --num-experts E")
        if args.domain is not None:
            raise CLIError("--domain applies to numpy inputs; routing logs carry a domain field")
        tr = convert.from_routing_log(
            path, num_experts=args.num_experts, weights=weights, max_open=args.max_open
        )
        return tr, None
    if path.suffix == ".safetensors" or (
        path.is_dir() and any(path.glob("*.safetensors")) and not any(path.glob("*.arrow"))
    ):
        if args.num_experts is None:
            raise CLIError(f"{path}: safetensors top-k files need --num-experts E")
        tr = convert.from_safetensors_topk(
            path, num_experts=args.num_experts, unwrap=args.unwrap_int8
        )
        if args.domain is not None:
            raise CLIError("--domain applies to numpy inputs; safetensors files name domains")
        return tr, None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", trace_io.IncompleteTraceWarning)
        tr = trace_io.read_trace(path, weights=weights, allow_incomplete=args.allow_incomplete)
        reader = trace_io.TraceReader(path, allow_incomplete=args.allow_incomplete)
        tok = reader.token_ids()
    if any(issubclass(w.category, trace_io.IncompleteTraceWarning) for w in caught):
        print(
            f"lrc: note: {path} is incomplete; converting its {tr.num_sequences:,} complete "
            "sequences",
            file=sys.stderr,
        )
    if args.num_experts is not None and args.num_experts != tr.num_experts:
        raise CLIError(
            f"{path}: --num-experts {args.num_experts} but the trace file says "
            f"num_experts = {tr.num_experts}"
        )
    if args.domain is not None:
        if tr.domains is not None:
            raise CLIError(
                f"{path}: the trace file already labels its sequences with domains; "
                "--domain would overwrite them (drop --domain)"
            )
        tr = lk.Trace(
            tr.experts,
            tr.offsets,
            num_experts=tr.num_experts,
            domains=[args.domain] * tr.num_sequences,
            weights=tr.weights,
            meta=tr.meta,
        )
    return tr, tok


def _concat(traces: list[Any]) -> Any:
    """The inputs as one trace (:func:`lrc_kernels.io.concat_traces`), refusing in CLI terms
    inputs that disagree on their shape or their domain labels."""
    from .. import io as trace_io

    if len({(t.num_experts, t.num_layers, t.top_k) for t in traces}) > 1:
        raise CLIError(
            "inputs disagree on their shape (num_experts, num_layers, top_k): "
            + "; ".join(f"({t.num_experts}, {t.num_layers}, {t.top_k})" for t in traces)
            + ". Convert them to separate files"
        )
    labeled = [t.domains is not None for t in traces]
    if any(labeled) and not all(labeled):
        raise CLIError(
            "some inputs have domain labels and others not; give --domain or "
            "convert them separately"
        )
    return trace_io.concat_traces(traces)


def _is_routing_log(path: Path) -> bool:
    return path.name.lower().endswith(
        (".jsonl", ".ndjson", ".csv", ".jsonl.gz", ".ndjson.gz", ".csv.gz")
    )


def _stream_routing_log(path: Path, out: Path, args: argparse.Namespace) -> int:
    """One routing log alone: written request by request (bounded memory)."""
    from .. import convert

    if args.num_experts is None:
        raise CLIError(f"{path}: a routing log needs --num-experts E")
    st = convert.routing_log_to_file(
        path,
        out,
        num_experts=args.num_experts,
        weights=not args.no_weights,
        max_open=args.max_open,
        model=args.model,
    )
    if not args.quiet:
        print(
            f"wrote {out}: {st.requests:,} requests, {st.tokens:,} tokens from "
            f"{st.records:,} records (at most {st.peak_open} open at once), "
            f"{_human_bytes(out.stat().st_size)}",
            file=sys.stderr,
        )
    return EXIT_OK


def cmd_convert(args: argparse.Namespace) -> int:
    from .. import io as trace_io

    out = Path(args.out)
    inputs = [Path(p) for p in args.inputs]
    for p in inputs:
        if not p.exists():
            raise CLIError(f"{p}: no such file or directory")
        if p.resolve() == out.resolve():
            raise CLIError(f"{p}: --out must differ from the inputs")
    if len(inputs) == 1 and _is_routing_log(inputs[0]) and args.split is None:
        if args.domain is not None:
            raise CLIError("--domain applies to numpy inputs; routing logs carry a domain field")
        return _stream_routing_log(inputs[0], out, args)
    traces, tokens = [], []
    for p in inputs:
        tr, tok = _load_input(p, args)
        traces.append(tr)
        tokens.append(tok)
    tr = _concat(traces)
    tok = None
    if all(t is not None for t in tokens):
        import numpy as np

        tok = np.concatenate(tokens)
    if args.split is not None:
        tr = tr.split(args.split)
    meta = {k: v for k, v in tr.meta.items() if k not in _FILE_KEYS and v is not None}
    if args.model is not None:
        meta["model"] = args.model
    meta["converted_from"] = [str(p) for p in inputs]
    tr = lk.Trace(
        tr.experts,
        tr.offsets,
        num_experts=tr.num_experts,
        domains=tr.domains,
        weights=None if args.no_weights else tr.weights,
        meta=meta,
        _validated=True,
    )
    trace_io.write_trace(out, tr, token_ids=tok)
    if not args.quiet:
        print(
            f"wrote {out}: {tr.num_sequences:,} sequences, {tr.num_tokens:,} tokens, "
            f"L={tr.num_layers}, E={tr.num_experts}, k={tr.top_k}, "
            f"{_human_bytes(out.stat().st_size)}",
            file=sys.stderr,
        )
    return EXIT_OK
