"""Record expert routing from Hugging Face MoE models: ``with capture(model) as cap: ...``.

This module is imported only when used and is the only part of ``lrc_kernels`` that needs
``torch`` and ``transformers``. See ``docs/capture.md`` for the design and the supported
model families.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from . import _validate as _v
from ._capture._recorder import Recorder, group_paths
from ._capture._sites import MoESite, find_moe_sites
from ._trace import Trace

__all__ = ["Capture", "capture", "capture_model", "find_moe_layers", "MoESite"]

_PRODUCER = "lrc_kernels.torch"


def find_moe_layers(model: nn.Module, layers: Any = "auto") -> list[MoESite]:
    """List the MoE blocks :func:`capture` would record, and how each is read.

    Parameters
    ----------
    model : torch.nn.Module
        A Hugging Face MoE model (transformers 4.x or 5.x) or one built the same way.
    layers : "auto", list of int, or list of str
        ``"auto"``: every feed-forward MoE block. A list of model layer numbers or of
        module paths restricts the selection.

    Returns
    -------
    list of MoESite
        One per MoE block with ``path``, ``layer_id``, ``group``, ``mode``,
        ``num_experts`` and ``top_k``.

    Notes
    -----
    A block is a module with a ``router``/``gate`` child next to an ``experts`` child;
    ``docs/capture.md`` lists how each family's decision is read.
    """
    return find_moe_sites(model, layers)


class Capture:
    """Context manager that records the top-k expert ids a model uses, token by token.

    Create it with :func:`capture`. Inside the ``with`` block run the model as usual
    (``model(...)``, ``model.generate(...)``); every forward pass adds its tokens. One
    *sequence* is one batch row: padding (attention mask 0) is dropped, and a
    ``generate()`` decode step (a KV-cache continuation) extends the rows of the previous
    step instead of starting new ones. Encoder-decoder models have two layer groups,
    ``"encoder"`` and ``"decoder"``, recorded as separate traces. A forward that cannot be
    placed in the open sequences (a decode step whose cache does not match them) raises
    ``RuntimeError`` naming the model class and the step; see ``docs/capture.md``.

    Attributes
    ----------
    sites : list of MoESite
        The recorded MoE blocks.
    groups : list of str
        Layer group names (one for decoder-only models).
    paths : dict of str to Path, or None
        Output file per group when ``out`` was given.
    stats : dict
        ``forwards`` (group forward passes recorded), ``transfers`` (device-to-host copies
        issued: one per group forward on a GPU, none on a CPU) and ``tokens`` (tokens kept).
    """

    def __init__(
        self,
        model: nn.Module,
        out: Any = None,
        *,
        layers: Any = "auto",
        weights: bool = False,
        domain: str | None = None,
        meta: Mapping[str, Any] | None = None,
        max_pending: int = 8,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(
                f"capture() needs a torch.nn.Module (a transformers model), got "
                f"{type(model).__name__}"
            )
        sites = find_moe_sites(model, layers)
        if not sites:
            raise ValueError(
                f"no MoE layers found in {type(model).__name__}: capture looks for blocks with "
                "a 'router' or 'gate' child next to an 'experts' child (see docs/capture.md). "
                "Is this a Mixture-of-Experts model?"
            )
        self.model = model
        self.sites = sites
        self._out = out
        self._weights = bool(weights)
        self._user_meta = dict(meta or {})
        self._domain = None if domain is None else str(domain)
        self._max_pending = max_pending
        self._rec: Recorder | None = None
        self._writers: dict[str, Any] = {}
        self._entered = False
        self._closed = False
        # group names are settled by the recorder (it disambiguates equal names)
        probe = Recorder(model, sites, weights=weights, domain=None, writers=None)
        self.groups = list(probe.groups)
        self.paths: dict[str, Path] | None = None
        if out is not None:
            self.paths = group_paths(out, self.groups)
        self._metas = {n: self._group_meta(probe, n) for n in self.groups}

    # -------------------------------------------------------------- metadata
    def _group_meta(self, rec: Recorder, name: str) -> dict[str, Any]:
        g = rec.groups[name]
        cfg = getattr(self.model, "config", None)
        model_type = getattr(cfg, "model_type", None) or type(self.model).__name__
        model_name = getattr(cfg, "name_or_path", None) or getattr(cfg, "_name_or_path", None)
        meta: dict[str, Any] = {
            "model": model_name or model_type,
            "model_type": model_type,
            "num_experts": g.E,
            "top_k": g.k,
            "layer_ids": [s.layer_id for s in g.sites],
            "producer": _PRODUCER,
            "group": name,
            "module_paths": [s.path for s in g.sites],
            "read_modes": sorted({s.mode for s in g.sites}),
        }
        try:
            import transformers

            meta["transformers_version"] = transformers.__version__
        except ImportError:  # pragma: no cover - torch-only models
            pass
        meta["torch_version"] = torch.__version__
        meta.update(self._user_meta)
        return meta

    # ------------------------------------------------------------- protocol
    def __enter__(self) -> Capture:
        if self._entered:
            raise RuntimeError("a Capture can be entered only once; call capture() again")
        self._entered = True
        writers = None
        if self.paths is not None:
            from .io import TraceWriter

            writers = {}
            try:
                for name, path in self.paths.items():
                    m = self._metas[name]
                    w = TraceWriter(
                        path,
                        num_experts=m["num_experts"],
                        top_k=m["top_k"],
                        num_layers=len(m["layer_ids"]),
                        model=m["model"],
                        layer_ids=m["layer_ids"],
                        weights_dtype="float32" if self._weights else None,
                        meta={k: v for k, v in m.items() if k not in ("model", "layer_ids")},
                    )
                    writers[name] = w
            except BaseException:
                for w in writers.values():
                    w.close()
                raise
            self._writers = writers
        self._rec = Recorder(
            self.model,
            self.sites,
            weights=self._weights,
            domain=self._domain,
            writers=writers,
            max_pending=self._max_pending,
        )
        self._rec.install()
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        rec = self._rec
        assert rec is not None
        rec.remove()
        rec.stop()
        self._closed = True
        err = rec.error
        for w in self._writers.values():
            try:
                w.close()
            except BaseException as e:  # keep the first error
                err = err or e
        if err is not None and exc_type is None:
            raise RuntimeError(f"lrc_kernels.torch.capture failed while recording: {err}") from err

    # ---------------------------------------------------------------- state
    @property
    def domain(self) -> str | None:
        """Domain label given to sequences that start from now on."""
        return self._domain

    @domain.setter
    def domain(self, value: str | None) -> None:
        self._domain = None if value is None else str(value)
        if self._rec is not None:
            self._rec.domain = self._domain

    @property
    def stats(self) -> dict[str, int]:
        return dict(self._rec.stats) if self._rec is not None else {}

    def flush(self) -> None:
        """Wait until every recorded forward has been processed by the background thread."""
        if self._rec is None:
            raise RuntimeError("this Capture was never entered; use it in a with block")
        self._rec.drain()
        if self._rec.error is not None:
            raise RuntimeError(
                f"lrc_kernels.torch.capture failed while recording: {self._rec.error}"
            ) from self._rec.error

    # -------------------------------------------------------------- results
    def trace(self, group: str | None = None) -> Trace:
        """The recorded trace of one layer group, tokens in batch-row order.

        Parameters
        ----------
        group : str, optional
            ``"encoder"`` or ``"decoder"`` for encoder-decoder models; may be omitted when
            the model has one group.

        Returns
        -------
        Trace
            ``experts`` of shape ``(N, L, k)``, one sequence per recorded batch row (rows of
            one forward in order, then the next forward's). Inside the ``with`` block,
            sequences still open (a ``generate()`` in progress) are included as they stand.
            With ``out=...`` the file is read back (after the ``with`` block).
        """
        name = self._pick(group)
        if self._rec is None:
            raise RuntimeError("nothing recorded yet: use the Capture in a with block first")
        if self.paths is not None:
            if not self._closed:
                raise RuntimeError(
                    "this capture writes to a file; read it after the with block "
                    f"(lrc_kernels.read_trace({str(self.paths[name])!r}))"
                )
            from .io import read_trace

            return read_trace(self.paths[name])
        if not self._closed:
            self.flush()
        elif self._rec.error is not None:
            raise RuntimeError(
                f"lrc_kernels.torch.capture failed while recording: {self._rec.error}"
            ) from self._rec.error
        return self._rec.build_trace(name, self._metas[name])

    def traces(self) -> dict[str, Trace]:
        """One trace per layer group (see :meth:`trace`)."""
        return {n: self.trace(n) for n in self.groups}

    def _pick(self, group: str | None) -> str:
        if group is None:
            if len(self.groups) != 1:
                raise ValueError(
                    f"this model has layer groups {self.groups}; pass trace(group=...) or use "
                    "traces()"
                )
            return self.groups[0]
        if group not in self.groups:
            raise ValueError(f"unknown layer group {group!r}; this model has {self.groups}")
        return group

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("recording" if self._entered else "new")
        return (
            f"<Capture {type(self.model).__name__} groups={self.groups} "
            f"layers={len(self.sites)} {state}>"
        )


def capture(
    model: nn.Module,
    out: str | os.PathLike | Mapping[str, Any] | None = None,
    *,
    layers: Any = "auto",
    weights: bool = False,
    domain: str | None = None,
    meta: Mapping[str, Any] | None = None,
    max_pending: int = 8,
) -> Capture:
    """Record the routing of every MoE layer of ``model`` while it runs.

    Parameters
    ----------
    model : torch.nn.Module
        A Hugging Face transformers MoE model (transformers >= 4.45, < 6), on any device.
    out : path, or mapping of group name to path, optional
        Write an Arrow trace file (``lrc_kernels.io`` format) in the background. For an
        encoder-decoder model a single path becomes ``name.encoder.ext`` and
        ``name.decoder.ext``. Without ``out`` the trace is kept in memory
        (:meth:`Capture.trace`).
    layers : "auto", list of int, or list of str
        Which MoE blocks to record (see :func:`find_moe_layers`).
    weights : bool
        Also record the gate weight of each chosen expert (float32).
    domain : str, optional
        Domain label of the recorded sequences; change it between batches with
        ``cap.domain = "..."``.
    meta : mapping, optional
        Extra metadata stored in the trace (JSON-serialisable for files).
    max_pending : int
        Forward passes that may wait for the background thread before a new one blocks.

    Returns
    -------
    Capture
        A context manager; ``with capture(model) as cap: ...`` then ``cap.trace()``.

    Notes
    -----
    Hooks read the indices the experts really receive (or the router's own selection for
    Switch/NLLB capacity routing and Llama 4), copy them into one device buffer per forward
    pass, and never synchronise with the host; one non-blocking copy per forward moves the
    buffer to pinned host memory. See ``docs/capture.md``.

    Examples
    --------
    >>> with capture(model) as cap:  # doctest: +SKIP
    ...     model(**batch)
    >>> cap.trace()  # doctest: +SKIP
    <Trace model='...' sequences=8 tokens=4096 layers=16 E=64 k=8>
    """
    return Capture(
        model,
        out,
        layers=layers,
        weights=weights,
        domain=domain,
        meta=meta,
        max_pending=max_pending,
    )


# ---------------------------------------------------------------------------- CLI helper
def _normalise_texts(texts: Any) -> dict[str, list[Path]]:
    if isinstance(texts, (str, os.PathLike)):
        texts = [texts]
    if isinstance(texts, Mapping):
        out: dict[str, list[Path]] = {}
        for dom, files in texts.items():
            fl = [files] if isinstance(files, (str, os.PathLike)) else list(files)
            out[str(dom)] = [Path(os.fspath(f)) for f in fl]
    elif isinstance(texts, Iterable):
        out = {}
        for f in texts:
            p = Path(os.fspath(f))
            out.setdefault(p.name.split(".")[0] or p.name, []).append(p)
    else:
        raise TypeError(
            "texts must be a path, a list of paths (one domain per file, named after it) or "
            f"a dict domain -> paths; got {type(texts).__name__}"
        )
    for dom, files in out.items():
        if not files:
            raise ValueError(f"domain {dom!r} has no text files")
        for f in files:
            if not f.is_file():
                raise FileNotFoundError(f"text file for domain {dom!r} not found: {f}")
    return out


def _load_local(model_dir: Any, device: Any, dtype: Any) -> tuple[Any, Any]:
    path = Path(os.fspath(model_dir))
    if not path.is_dir():
        raise FileNotFoundError(
            f"{model_dir!s} is not a local model directory. capture_model never downloads: "
            "fetch the model first (e.g. `huggingface-cli download <id> --local-dir DIR`) and "
            "pass DIR"
        )
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path} has no config.json: not a transformers model directory")
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

    try:
        config = AutoConfig.from_pretrained(path, local_files_only=True)
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    except OSError as exc:
        raise FileNotFoundError(
            f"could not load the config/tokenizer from {path} without network access "
            f"(HF_HUB_OFFLINE={os.environ.get('HF_HUB_OFFLINE', 'unset')}): {exc}"
        ) from exc
    seq2seq = getattr(config, "is_encoder_decoder", False)
    auto = AutoModelForSeq2SeqLM if seq2seq else AutoModelForCausalLM
    kw: dict[str, Any] = {"local_files_only": True}
    if dtype is not None:
        kw["dtype"] = getattr(torch, dtype) if isinstance(dtype, str) else dtype
    model = auto.from_pretrained(path, **kw)
    model.to(device)
    model.eval()
    return model, tokenizer


def _chunks(tokenizer: Any, files: Sequence[Path], seq_len: int) -> np.ndarray:
    ids: list[int] = []
    for f in files:
        text = f.read_text(encoding="utf-8")
        enc = tokenizer(text, add_special_tokens=False)["input_ids"]
        ids.extend(int(t) for t in enc)
    n = len(ids) // seq_len
    return np.asarray(ids[: n * seq_len], dtype=np.int64).reshape(n, seq_len)


def capture_model(
    model_dir: str | os.PathLike,
    texts: Any,
    out: str | os.PathLike | None,
    *,
    seq_len: int = 512,
    max_sequences: int | None = None,
    batch_size: int = 8,
    device: str = "cpu",
    dtype: Any = None,
    weights: bool = False,
    progress: bool = True,
    model: nn.Module | None = None,
    tokenizer: Any = None,
) -> Any:
    """Capture a routing trace of a local model on text files (the ``lrc capture`` command).

    Each domain's files are tokenised (no special tokens), concatenated and cut into
    consecutive ``seq_len``-token sequences (the paper uses 512; a final shorter piece is
    dropped); batches of ``batch_size`` sequences are run through the model under
    :func:`capture`.

    Parameters
    ----------
    model_dir : path
        Local transformers model directory (config, weights, tokenizer). Nothing is ever
        downloaded (``local_files_only=True``), whatever ``HF_HUB_OFFLINE`` says.
    texts : path, list of paths, or dict of domain to path(s)
        Text files (UTF-8). A list gives one domain per file, named after the file (the
        part of its name before the first dot).
    out : path or None
        Trace file to write (Arrow, ``lrc_kernels.io``). None returns the trace in memory.
    seq_len : int
        Tokens per sequence.
    max_sequences : int, optional
        At most this many sequences per domain.
    batch_size : int
        Sequences per forward pass.
    device : str
        Torch device for the model (``"cpu"``, ``"cuda"``, ``"cuda:1"``...).
    dtype : str or torch.dtype, optional
        Load the weights in this dtype (``"bfloat16"``); default: the checkpoint's.
    weights : bool
        Also record gate weights.
    progress : bool
        Show a progress bar (tqdm) on stderr.
    model, tokenizer : optional
        Already loaded model and tokenizer to use instead of loading ``model_dir``.

    Returns
    -------
    Path, dict, or Trace
        ``out`` as a Path (a dict group -> Path for encoder-decoder models), or the Trace
        (dict of Traces) when ``out`` is None.

    Notes
    -----
    Encoder-decoder models get the same sequence as encoder input and decoder input
    (teacher forcing), recorded as two traces.
    """
    seq_len = _v.check_int(seq_len, "seq_len", 1)
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if max_sequences is not None and (not isinstance(max_sequences, int) or max_sequences < 1):
        raise ValueError(f"max_sequences must be a positive integer or None, got {max_sequences!r}")
    domains = _normalise_texts(texts)
    if model is None or tokenizer is None:
        loaded_model, loaded_tok = _load_local(model_dir, device, dtype)
        model = model if model is not None else loaded_model
        tokenizer = tokenizer if tokenizer is not None else loaded_tok
    per_domain = {}
    for dom, files in domains.items():
        c = _chunks(tokenizer, files, seq_len)
        if max_sequences is not None:
            c = c[:max_sequences]
        if c.shape[0] == 0:
            raise ValueError(
                f"domain {dom!r}: its text has fewer than seq_len = {seq_len} tokens; add text "
                "or lower seq_len"
            )
        per_domain[dom] = c
    total = sum(c.shape[0] for c in per_domain.values())
    seq2seq = bool(getattr(getattr(model, "config", None), "is_encoder_decoder", False))
    dev = next(model.parameters()).device
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, unit="seq", desc="capture")
    try:
        with capture(model, out, weights=weights) as cap, torch.inference_mode():
            for dom, c in per_domain.items():
                cap.domain = dom
                for start in range(0, c.shape[0], batch_size):
                    batch = torch.from_numpy(c[start : start + batch_size]).to(dev)
                    if seq2seq:
                        model(input_ids=batch, decoder_input_ids=batch)
                    else:
                        model(input_ids=batch, use_cache=False)
                    if bar is not None:
                        bar.update(batch.shape[0])
    finally:
        if bar is not None:
            bar.close()
    if out is None:
        return cap.traces() if len(cap.groups) > 1 else cap.trace()
    assert cap.paths is not None
    return cap.paths if len(cap.groups) > 1 else cap.paths[cap.groups[0]]
