"""Fuzz worker: runs one case at a time in its own process, so a crash cannot take pytest.

Protocol: the parent writes pickled case dicts on stdin; the worker answers each with a
pickled outcome dict on a private copy of its stdout (file descriptor 1 itself goes to
/dev/null, so stray prints cannot corrupt the stream). If the worker dies, the case in
flight crashed it.

Every case is classified against an independent oracle (plain Python rules in this file):

- ``result``: the call returned, the oracle says the input is valid, and the result equals
  the reference (``backend="reference"`` for metrics, the input itself for containers);
- ``clear_error``: a documented exception (docs/api.md, "Errors") with a plain message;
- ``unclear_error``: any other exception, or a message with NumPy reprs or internals;
- ``silent``: a result for input the oracle says is invalid, or a result that differs;
- ``refused_valid``: a documented error for input the oracle says is valid (a false
  refusal; memory-need refusals are clear errors by contract and not counted here).
"""

from __future__ import annotations

import contextlib
import io as _io
import os
import pickle
import re
import sys
import tempfile
from pathlib import Path

import numpy as np

CLEAR = (TypeError, ValueError, IndexError, FileNotFoundError, NotADirectoryError)
UNPLAIN = re.compile(r"\bnp\.\w+\(|numba|<class |object at 0x|Traceback|array\(\[")
MAX_WINDOW = 1 << 40
MAX_E = 1 << 32


class Invalid(Exception):
    """The oracle's verdict: this input must be refused."""


# ------------------------------------------------------------------ oracle rules
def is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def want_int(v, lo, hi=(1 << 62) - 1):
    if not is_int(v) or not lo <= int(v) <= hi:
        raise Invalid
    return int(v)


def want_bool(v):
    if not isinstance(v, (bool, np.bool_)):
        raise Invalid
    return bool(v)


def want_choice(v, choices):
    if not isinstance(v, str) or v not in choices:
        raise Invalid
    return v


def want_ms(m):
    if isinstance(m, (list, tuple, np.ndarray, range)):
        vals = list(np.asarray(m).ravel()) if isinstance(m, np.ndarray) else list(m)
        if isinstance(m, np.ndarray) and m.dtype.kind not in "iu":
            raise Invalid
        if not vals:
            raise Invalid
        return [want_int(v, 1, MAX_WINDOW) for v in vals], False
    return [want_int(m, 1, MAX_WINDOW)], True


def int_array(a):
    a = np.asarray(a) if not hasattr(a, "numpy") else a.numpy()
    if a.dtype.kind not in "iu":
        raise Invalid
    return a


def expected_trace(c):
    """The (ids, offsets, weights) a valid Trace must hold, exactly; or raise Invalid."""
    E = c["E"]
    if not is_int(E) or not 1 <= int(E) <= MAX_E:
        raise Invalid
    x = int_array(c["experts"])
    if x.ndim != 3 or x.shape[1] < 1 or x.shape[2] < 1 or x.shape[2] > E:
        raise Invalid
    N = x.shape[0]
    rows = x.tolist()
    for tok in rows:
        for slots in tok:
            if any(not 0 <= v < E for v in slots) or len(set(slots)) != len(slots):
                raise Invalid
    off = c.get("offsets")
    if off is None:
        off = [0, N]
    else:
        o = int_array(off)
        if o.ndim != 1 or o.size < 1:
            raise Invalid
        off = [int(v) for v in o.tolist()]
        if off[0] != 0 or off[-1] != N or any(b < a for a, b in zip(off, off[1:], strict=False)):
            raise Invalid
    w = c.get("weights")
    if w is not None:
        w = np.asarray(w)
        if w.dtype.kind != "f" or w.shape != x.shape:
            raise Invalid
        if not all(np.isfinite(v) and v >= 0 for v in w.ravel().tolist()):
            raise Invalid
    meta = c.get("meta")
    if meta is not None and not isinstance(meta, dict):
        raise Invalid
    return rows, off, w


# ------------------------------------------------------------------ case runners
def build(c, lk):
    x = c["experts"]
    if c.get("torch"):
        import torch

        x = torch.from_numpy(np.ascontiguousarray(x))
    return lk.Trace(
        x, c.get("offsets"), num_experts=c["E"], weights=c.get("weights"), meta=c.get("meta")
    )


def run_trace(c, lk):
    try:
        want = expected_trace(c)
    except Invalid:
        want = None
    tr = build(c, lk)
    if want is None:
        return "silent", "accepted invalid input"
    rows, off, w = want
    same = tr.experts.astype(np.int64).tolist() == rows and tr.offsets.tolist() == off
    if w is not None:
        same = same and np.array_equal(tr.weights, w)
    return ("result", "") if same else ("silent", "stored values differ from the input")


def small_trace(lk, spec):
    S, T, L, E, k, seed = spec
    return lk.synthetic_trace(S, T, L, E, k, stay=0.5, seed=seed, domains=["a", "b"])


def same_result(a, b) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return (np.isnan(a) and np.isnan(b)) or a == b
    if isinstance(a, tuple):
        return all(same_result(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, np.ndarray):
        return np.allclose(a, b, rtol=1e-12, atol=0, equal_nan=True)
    fields = ("value", "threshold", "ratio", "windows", "rates", "stat")
    for f in fields:
        if hasattr(a, f):
            va, vb = getattr(a, f), getattr(b, f)
            if not np.allclose(np.asarray(va, float), np.asarray(vb, float), 1e-12, 0, True):
                return False
    return True


def check_metric_args(c, tr):
    fn, kw = c["fn"], c["kw"]
    if fn in ("srp", "load_balance", "domain_specialization"):
        want_ms(c["m"]) if fn == "srp" else want_int(c["m"], 1, MAX_WINDOW)
    if fn == "srp":
        want_choice(kw.get("level", "model"), ("model", "layer", "expert"))
        want_int(kw.get("bootstrap", 0), 0)
        conf = kw.get("confidence", 0.95)
        if isinstance(conf, bool) or not isinstance(conf, (int, float)) or not 0 < conf < 1:
            raise Invalid
        want_int(kw.get("seed", 0), 0)
        want_bool(kw.get("by_domain", False))
    if fn in ("sch", "hit_curve"):
        pol = c.get("policy", "sch")
        want_choice(pol, ("lru", "lfu", "belady", "sch"))
        if pol == "sch":
            want_ms(c["m"])
        elif c["m"] is not None:
            raise Invalid
        want_choice(kw.get("level", "layer"), ("layer", "model"))
        want_bool(kw.get("warm_start", True))
        want_bool(kw.get("by_domain", False))
    want_choice(kw.get("backend", "auto"), ("auto", "cpu", "gpu", "reference"))
    if kw.get("backend") == "gpu":
        raise Invalid  # no device on the fuzz machine: must be a clear refusal
    form = c["form"]
    if form == "array" and c.get("num_experts") is None:
        raise Invalid


def call_metric(c, lk, tr, backend):
    fn, kw = c["fn"], dict(c["kw"])
    if backend is not None:
        kw["backend"] = backend
    src = tr
    if c["form"] == "array":
        src = tr.experts.astype(c.get("dtype", "int64"))
        kw["num_experts"] = c.get("num_experts")
    if fn == "hit_curve":
        return lk.hit_curve(src, c["policy"], m=c["m"], **kw)
    return getattr(lk, fn)(src, c["m"], **kw)


def run_metric(c, lk):
    tr = small_trace(lk, c["trace"])
    if c["form"] == "array":
        tr = tr.select(sequences=[0])
    try:
        check_metric_args(c, tr)
        valid = True
    except Invalid:
        valid = False
    got = call_metric(c, lk, tr, None)
    if not valid:
        return "silent", "accepted invalid arguments"
    ref = call_metric(c, lk, tr, "reference")
    return ("result", "") if same_result(got, ref) else ("silent", "differs from reference")


def run_method(c, lk):
    tr = small_trace(lk, c["trace"])
    name, arg = c["method"], c["arg"]
    S, L = tr.num_sequences, tr.num_layers
    ex = tr.experts.tolist()
    off = tr.offsets.tolist()
    try:
        if name == "split":
            n = want_int(arg, 1)
            want = [0]
            for s in range(S):
                for a in range(off[s], off[s + 1], n):
                    want.append(min(a + n, off[s + 1]))
            want_rows = ex
        else:
            idx = list(arg) if isinstance(arg, (list, tuple)) else [arg]
            size = S if name == "sequences" else L
            idx = [want_int(v, -size, size - 1) for v in idx]
            idx = [v % size for v in idx]
            if name == "layers" and not idx:
                raise Invalid
            if name == "sequences":
                want_rows = [ex[r] for s in idx for r in range(off[s], off[s + 1])]
                want = [0]
                for s in idx:
                    want.append(want[-1] + off[s + 1] - off[s])
            else:
                want_rows = [[tok[lay] for lay in idx] for tok in ex]
                want = off
    except Invalid:
        want = None
    if name == "split":
        out = tr.split(arg)
    else:
        out = tr.select(**{name: arg})
    if want is None:
        return "silent", "accepted invalid index"
    same = out.experts.tolist() == want_rows and out.offsets.tolist() == want
    return ("result", "") if same else ("silent", "selected something else")


def run_io(c, lk, tmp):
    tr = small_trace(lk, c["trace"])
    kw = c["kw"]
    try:
        comp = kw.get("compression", "zstd")
        if comp not in ("zstd", "lz4", None):
            raise Invalid
        lvl = kw.get("compression_level")
        if lvl is not None:
            if comp is None:
                raise Invalid
            import pyarrow as pa

            lo = pa.Codec.minimum_compression_level(comp)
            want_int(lvl, lo, pa.Codec.maximum_compression_level(comp))
        if kw.get("batch_tokens") is not None:
            want_int(kw["batch_tokens"], 1)
        valid = True
    except Invalid:
        valid = False
    p = Path(tmp) / "t.lrc.arrow"
    if p.exists():
        p.unlink()
    lk.write_trace(p, tr, **kw)
    if not valid:
        return "silent", "accepted invalid arguments"
    back = lk.read_trace(p)
    same = np.array_equal(back.experts, tr.experts) and np.array_equal(back.offsets, tr.offsets)
    return ("result", "") if same else ("silent", "read back differs")


def run_cli(c, lk, tmp):
    from lrc_kernels import cli

    good = Path(tmp) / "good.lrc.arrow"
    if not good.exists():
        lk.write_trace(good, small_trace(lk, (3, 12, 2, 8, 2, 1)))
        (Path(tmp) / "junk.arrow").write_bytes(b"not a trace at all")
    argv = [a.replace("{good}", str(good)).replace("{tmp}", str(tmp)) for a in c["argv"]]
    out, err = _io.StringIO(), _io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = cli.main(argv)
        except SystemExit as exc:  # argparse usage errors
            rc = exc.code if isinstance(exc.code, int) else 2
    text = err.getvalue().strip()
    if rc == 0:
        return ("result", "") if c["valid"] else ("silent", f"exit 0 for {argv}")
    if "internal error" in text or not text or UNPLAIN.search(text):
        return "unclear_error", text[-300:]
    return "clear_error", text[-300:]


def run_synthetic(c, lk):
    a = c["args"]
    try:
        S, T, L, E, k = (want_int(v, 0) for v in a[:5])
        want_int(c["seed"], 0)
        if E < 1 or k < 1 or k > E or L < 1:
            raise Invalid
        if S * max(T, 1) * L * k > 10**7:
            raise Invalid  # beyond what the fuzz wants to allocate: refusal or result both fine
        valid = True
    except Invalid:
        valid = False
    tr = lk.synthetic_trace(*a, seed=c["seed"])
    if not valid:
        return ("result", "") if S * max(T, 1) * L * k > 10**7 else ("silent", "accepted")
    again = lk.Trace(tr.experts.astype(np.int64), tr.offsets, num_experts=E)
    ok = again.experts.shape == (S * T, L, k)
    return ("result", "") if ok else ("silent", "wrong shape")


def run_case(c, lk, tmp) -> dict:
    kind = c["kind"]
    if kind == "__segv__":  # the harness test: die as a SIGSEGV would
        import signal

        os.kill(os.getpid(), signal.SIGSEGV)
    try:
        if kind == "trace":
            outcome, note = run_trace(c, lk)
        elif kind == "metric":
            outcome, note = run_metric(c, lk)
        elif kind == "method":
            outcome, note = run_method(c, lk)
        elif kind == "io":
            outcome, note = run_io(c, lk, tmp)
        elif kind == "cli":
            outcome, note = run_cli(c, lk, tmp)
        else:
            outcome, note = run_synthetic(c, lk)
    except CLEAR as exc:
        msg = str(exc)
        if not msg or UNPLAIN.search(msg):
            return {"outcome": "unclear_error", "type": type(exc).__name__, "msg": msg[:500]}
        return {"outcome": "clear_error", "type": type(exc).__name__, "msg": msg[:500]}
    except (ImportError, RuntimeError) as exc:  # backend="gpu" without a device
        ok = c.get("kw", {}).get("backend") == "gpu"
        return {
            "outcome": "clear_error" if ok else "unclear_error",
            "type": type(exc).__name__,
            "msg": str(exc)[:500],
        }
    except Exception as exc:  # noqa: BLE001 - classified, not hidden
        return {"outcome": "unclear_error", "type": type(exc).__name__, "msg": str(exc)[:500]}
    return {"outcome": outcome, "type": None, "msg": note}


def main() -> None:
    proto = os.fdopen(os.dup(1), "wb")
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    sys.stdout = open(os.devnull, "w")  # noqa: SIM115
    import lrc_kernels as lk

    stdin = sys.stdin.buffer
    with tempfile.TemporaryDirectory() as tmp:
        while True:
            try:
                case = pickle.load(stdin)
            except EOFError:
                return
            res = run_case(case, lk, tmp)
            pickle.dump(res, proto)
            proto.flush()


if __name__ == "__main__":
    main()
