"""Fuzz the public boundary: bad input never crashes the process or silently changes data.

Hypothesis generates calls of the public API (``Trace``, its methods, every metric,
``write_trace``/``read_trace``, ``synthetic_trace``) and of the CLI with odd arguments:
wrong types (bools, floats, strings, None), extremes (0, -1, 2**31, 2**32 + 1, 2**63 - 1,
2**64), empty and large shapes, every integer and float dtype, NaN/inf weights,
non-contiguous and read-only arrays, torch tensors. Each case runs in a persistent worker
subprocess (``tests/fuzz/worker.py``), so a crash (SIGSEGV) is caught and reported as a
failure of that case instead of killing pytest. The worker classifies each case against
plain-Python rules: a documented exception with a plain message (``clear_error``), or a
result equal to the reference (``result``); anything else fails the test.

Runs: ``.ci/run`` and a plain ``pytest`` run a fixed seed and ``LRC_FUZZ_CASES`` cases
(default 300, about 30 s). The long run::

    LRC_FUZZ_CASES=10000 LRC_FUZZ_REPORT=fuzz-report.json \\
        python -m pytest tests/test_fuzz.py -q -p no:cacheprovider

writes the count of each outcome to ``LRC_FUZZ_REPORT`` (``LRC_FUZZ_SEED`` picks another
fixed seed; ``LRC_FUZZ_KEEP_GOING=1`` counts every case instead of stopping at the first
bad one, and ``test_no_bad_outcome_was_counted`` then fails on any).
"""

from __future__ import annotations

import json
import os
import pickle
import select
import subprocess
import sys
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

WORKER = Path(__file__).resolve().parent / "fuzz" / "worker.py"
CASES = int(os.environ.get("LRC_FUZZ_CASES", "300"))
SEED = int(os.environ.get("LRC_FUZZ_SEED", "20261202"))
CASE_TIMEOUT = 60.0
# count every case instead of stopping (and shrinking) at the first bad one
KEEP_GOING = os.environ.get("LRC_FUZZ_KEEP_GOING") == "1"
GOOD = {"result", "clear_error"}

COUNTS: Counter = Counter()
FAILURES: list = []


class Worker:
    """One subprocess running cases one at a time; restarted after a crash."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        env = dict(os.environ)
        env["LRC_MEMORY_LIMIT"] = str(256 << 20)  # refuse big tables instead of swapping
        env["PYTHONPATH"] = os.pathsep.join(
            [str(WORKER.parents[2])] + [p for p in [env.get("PYTHONPATH")] if p]
        )
        self.proc = subprocess.Popen(
            [sys.executable, str(WORKER)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
        )

    def run(self, case: dict) -> dict:
        if self.proc is None or self.proc.poll() is not None:
            self.start()
        assert self.proc is not None and self.proc.stdin and self.proc.stdout
        try:
            pickle.dump(case, self.proc.stdin)
            self.proc.stdin.flush()
        except BrokenPipeError:
            return self._dead()
        ready, _, _ = select.select([self.proc.stdout], [], [], CASE_TIMEOUT)
        if not ready:
            self.stop()
            return {"outcome": "timeout", "type": None, "msg": f"> {CASE_TIMEOUT} s"}
        try:
            return pickle.load(self.proc.stdout)
        except EOFError:
            return self._dead()

    def _dead(self) -> dict:
        assert self.proc is not None
        rc = self.proc.wait()
        self._close()
        return {"outcome": "crash", "type": None, "msg": f"worker exit status {rc}"}

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self._close()

    def _close(self) -> None:
        assert self.proc is not None
        for f in (self.proc.stdin, self.proc.stdout):
            if f is not None:
                try:
                    f.close()
                except BrokenPipeError:
                    pass
        self.proc = None


_WORKER = Worker()


@pytest.fixture(scope="module", autouse=True)
def _worker_and_report():
    yield
    _WORKER.stop()
    report = os.environ.get("LRC_FUZZ_REPORT")
    if report:
        Path(report).write_text(
            json.dumps(
                {
                    "cases": sum(COUNTS.values()),
                    "seed": SEED,
                    "outcomes": dict(COUNTS),
                    "failures": FAILURES[:50],
                },
                indent=1,
                default=str,
            )
        )


def check(case: dict) -> None:
    res = _WORKER.run(case)
    COUNTS[res["outcome"]] += 1
    if res["outcome"] not in GOOD:
        FAILURES.append({"case": repr(case)[:1500], **res})
    assert KEEP_GOING or res["outcome"] in GOOD, (res, case)


# ------------------------------------------------------------------ strategies
ODD_INTS = st.sampled_from(
    [
        0,
        1,
        2,
        3,
        -1,
        2**31 - 1,
        2**31,
        2**32,
        2**32 + 1,
        2**40,
        2**40 + 1,
        2**62,
        2**63 - 1,
        2**63,
        2**64,
        -(2**63),
    ]
)
ODD_SCALARS = st.one_of(
    ODD_INTS,
    st.sampled_from(
        [
            True,
            False,
            None,
            1.0,
            2.5,
            float("nan"),
            float("inf"),
            "4",
            "x",
            b"4",
            [],
            [1],
            (2,),
            np.int8(3),
            np.uint64(2**64 - 1),
            np.float64(4.0),
            np.int64(-5),
            np.bool_(True),
        ]
    ),
    st.integers(-3, 40),
)
INT_DTYPES = ["int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64"]
ALL_DTYPES = INT_DTYPES + ["float16", "float32", "float64", "bool", "object", "complex64"]
TRACE_SPECS = st.tuples(
    st.integers(1, 3),  # S
    st.integers(0, 10),  # T
    st.integers(1, 2),  # L
    st.integers(2, 9),  # E
    st.integers(1, 2),  # k
    st.integers(0, 1000),  # seed
)


@st.composite
def id_arrays(draw):
    shape = draw(
        st.one_of(
            st.tuples(st.integers(0, 5), st.integers(0, 3), st.integers(0, 4)),
            st.lists(st.integers(0, 3), min_size=0, max_size=5).map(tuple),
        )
    )
    dtype = draw(st.sampled_from(ALL_DTYPES))
    n = int(np.prod(shape)) if shape else 1
    mode = draw(st.sampled_from(["small", "extreme", "distinct"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    if mode == "extreme":
        pool = [0, 1, -1, 7, 255, 256, 65535, 65536, 2**31 - 1, 2**32 - 1, 2**32 + 1, 2**63 - 1]
        vals = rng.choice(np.array(pool, dtype=object), size=n)
    elif mode == "distinct" and len(shape) == 3 and shape[2] and n:
        vals = np.stack([rng.permutation(12)[: shape[2]] for _ in range(n // shape[2])])
    else:
        vals = rng.integers(-1, 9, size=n)
    ints = [int(v) for v in np.ravel(vals)][:n]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # float16 overflow: inf is fine
            a = np.array(ints, dtype=object).astype(dtype)
    except (OverflowError, TypeError, ValueError):  # does not fit: the widest signed ids
        a = np.array([min(max(v, -(2**63)), 2**63 - 1) for v in ints], dtype=np.int64)
    a = a.reshape(shape) if shape else a.reshape(())
    layout = draw(st.sampled_from(["c", "f", "strided", "readonly", "list"]))
    if layout == "f":
        a = np.asfortranarray(a)
    elif layout == "strided" and a.ndim >= 1:
        a = np.repeat(a, 2, axis=0)[::2]
    elif layout == "readonly":
        a.setflags(write=False)
    elif layout == "list" and dtype != "object":
        return a.tolist()
    return a


@st.composite
def trace_cases(draw):
    ex = draw(id_arrays())
    E = draw(st.one_of(st.integers(1, 12), ODD_SCALARS))
    arr = np.asarray(ex)
    N = arr.shape[0] if arr.ndim >= 1 else 0
    offsets = draw(
        st.one_of(
            st.none(),
            st.just([0, N]),
            st.lists(st.integers(-1, N + 1), min_size=0, max_size=4),
            st.sampled_from([[0.0, float(N)], [True, N], [0, 2**64 - 1], "0"]),
        )
    )
    weights = None
    wmode = draw(st.sampled_from(["none", "ok", "nan", "inf", "neg", "int", "shape"]))
    if wmode != "none" and arr.ndim == 3:
        w = np.ones(arr.shape, draw(st.sampled_from(["float16", "float32", "float64"])))
        if w.size and wmode in ("nan", "inf", "neg"):
            w.flat[-1] = {"nan": np.nan, "inf": np.inf, "neg": -1.0}[wmode]
        if wmode == "int":
            w = w.astype(np.int64)
        if wmode == "shape":
            w = w[:, :, :0]
        weights = w
    meta = draw(st.sampled_from([None, {}, {"model": "x"}, 5, "meta", [1]]))
    torch = draw(st.booleans()) and isinstance(ex, np.ndarray) and ex.dtype.kind in "iub"
    return {
        "kind": "trace",
        "experts": ex,
        "E": E,
        "offsets": offsets,
        "weights": weights,
        "meta": meta,
        "torch": torch and _has_torch(),
    }


def _has_torch() -> bool:
    try:
        import importlib.util

        return importlib.util.find_spec("torch") is not None
    except ValueError:  # pragma: no cover
        return False


M_VALUES = st.one_of(
    st.integers(1, 20),
    st.integers(1, 20),
    st.lists(st.integers(1, 12), min_size=1, max_size=3),
    ODD_SCALARS,
    st.lists(st.one_of(st.integers(1, 12), ODD_INTS), min_size=0, max_size=3),
    st.sampled_from([np.array([2, 4]), np.array([1.0]), np.array([], np.int64), range(1, 3)]),
)
LEVELS = st.sampled_from(["model", "layer", "expert", "MODEL", "", None, 1])
BACKENDS = st.sampled_from(["auto", "cpu", "reference", "gpu", "cuda", None])


@st.composite
def metric_cases(draw):
    fn = draw(st.sampled_from(["srp", "sch", "hit_curve", "load_balance", "domain_specialization"]))
    kw: dict = {}
    if draw(st.booleans()):
        kw["backend"] = draw(BACKENDS)
    c = {"kind": "metric", "fn": fn, "trace": draw(TRACE_SPECS), "m": draw(M_VALUES)}
    if fn == "srp":
        for key, s in (
            ("level", LEVELS),
            ("bootstrap", st.one_of(st.integers(0, 3), ODD_SCALARS)),
            ("confidence", st.sampled_from([0.9, 0.5, 0, 1, 1.5, -1, float("nan"), "0.9", True])),
            ("seed", st.one_of(st.integers(0, 5), ODD_SCALARS)),
            ("by_domain", st.sampled_from([True, False, 1, "yes", None])),
        ):
            if draw(st.booleans()):
                kw[key] = draw(s)
    if fn in ("sch", "hit_curve"):
        c["policy"] = draw(st.sampled_from(["lru", "lfu", "belady", "sch", "opt", None]))
        if fn == "sch":
            c["policy"] = "sch"
        if fn == "hit_curve" and c["policy"] != "sch" and draw(st.booleans()):
            c["m"] = None
        for key, s in (
            ("level", LEVELS),
            ("warm_start", st.sampled_from([True, False, 1, 0, "no", None])),
            ("by_domain", st.sampled_from([True, False, 1, None])),
        ):
            if draw(st.booleans()):
                kw[key] = draw(s)
    c["kw"] = kw
    c["form"] = draw(st.sampled_from(["trace", "trace", "array"]))
    if c["form"] == "array":
        c["dtype"] = draw(st.sampled_from(INT_DTYPES))
        c["num_experts"] = draw(st.one_of(st.just(None), st.integers(9, 12), ODD_SCALARS))
        if draw(st.booleans()):
            c["num_experts"] = c["trace"][3]
    return c


@st.composite
def method_cases(draw):
    method = draw(st.sampled_from(["sequences", "layers", "split"]))
    arg = draw(
        st.one_of(
            st.integers(-4, 12),
            ODD_SCALARS,
            st.lists(st.one_of(st.integers(-4, 4), ODD_SCALARS), min_size=0, max_size=3),
        )
    )
    return {"kind": "method", "method": method, "arg": arg, "trace": draw(TRACE_SPECS)}


@st.composite
def io_cases(draw):
    kw: dict = {}
    for key, s in (
        ("compression", st.sampled_from(["zstd", "lz4", None, "gzip", 3])),
        ("compression_level", st.one_of(st.integers(-5, 30), ODD_SCALARS)),
        ("batch_tokens", st.one_of(st.integers(1, 20), ODD_SCALARS)),
    ):
        if draw(st.booleans()):
            kw[key] = draw(s)
    return {"kind": "io", "kw": kw, "trace": draw(TRACE_SPECS)}


CLI_NUMBERS = st.sampled_from(
    [
        "1",
        "4",
        "16",
        "0",
        "-1",
        "2.5",
        "nan",
        "inf",
        "1e3",
        "x",
        "",
        str(2**31),
        str(2**40),
        str(2**40 + 1),
        str(2**63 - 1),
        str(2**64),
        "٣",
    ]
)


@st.composite
def cli_cases(draw):
    cmd = draw(st.sampled_from(["info", "srp", "sch"]))
    target = draw(
        st.sampled_from(["{good}", "{good}", "{tmp}/missing.arrow", "{tmp}/junk.arrow", "{tmp}"])
    )
    argv = [cmd, target]
    valid = target == "{good}"
    if cmd == "info" and draw(st.booleans()):
        argv.append("--verify")
    if cmd in ("srp", "sch"):
        ms = draw(st.lists(CLI_NUMBERS, min_size=1, max_size=2))
        argv += ["--m", *ms]
        # int() reads any Unicode decimal digits ("٣" is 3): the value is exact
        valid = valid and all(v.isdigit() and 1 <= int(v) <= 2**40 for v in ms)
        if cmd == "srp" and draw(st.booleans()):
            b = draw(CLI_NUMBERS)
            argv += ["--bootstrap", b]
            valid = valid and b.isdigit()  # a huge B is refused clearly (memory)
        if cmd == "sch" and draw(st.booleans()):
            lv = draw(st.sampled_from(["layer", "model", "expert", "x"]))
            argv += ["--level", lv]
            valid = valid and lv in ("layer", "model")
    argv.append(draw(st.sampled_from(["--json", "--csv", "--format", ""])))
    if argv[-1] == "":
        argv.pop()
    elif argv[-1] == "--format":
        valid = False
    # "valid" only decides whether exit 0 is acceptable; any clear error is always fine
    return {"kind": "cli", "argv": argv, "valid": valid}


@st.composite
def synthetic_cases(draw):
    small = st.one_of(st.integers(0, 6), ODD_SCALARS)
    args = [draw(small) for _ in range(5)]
    return {
        "kind": "synthetic",
        "args": args,
        "seed": draw(st.one_of(st.integers(0, 9), ODD_SCALARS)),
    }


CASE = st.one_of(
    trace_cases(), metric_cases(), method_cases(), io_cases(), cli_cases(), synthetic_cases()
)


@seed(SEED)
@settings(
    max_examples=CASES,
    deadline=None,
    derandomize=False,
    database=None,
    suppress_health_check=list(HealthCheck),
)
@given(case=CASE)
def test_public_boundary_fuzz(case):
    check(case)


def test_no_bad_outcome_was_counted():
    """With LRC_FUZZ_KEEP_GOING=1 the fuzz test counts bad cases; this one fails on them."""
    assert not FAILURES, FAILURES[:5]


def test_worker_reports_a_crash_as_a_crash():
    """The harness itself: a case that kills its worker (SIGSEGV) is a 'crash', and the next
    case runs on a fresh worker."""
    w = Worker()
    try:
        assert w.run({"kind": "__segv__"})["outcome"] == "crash"
        res = w.run({"kind": "cli", "argv": ["info", "{good}"], "valid": True})
        assert res["outcome"] == "result", res
    finally:
        w.stop()
