"""The capture machinery: hooks, per-forward device buffers, host transfer, sequence assembly.

Life of one forward pass of one layer group (the decoder of a causal LM, or the encoder /
decoder of a seq2seq model):

1. A pre-hook on the group's layer stack reads the batch shape ``(B, S)``, the 2-D attention
   mask (its own, else the one the outer model received) and the KV-cache length, from
   whichever argument holds a cache (host-side metadata only; see ``_steps``), and
   allocates one id buffer ``L*B*S*k + B*S + 1`` on the model's device, layer-major (plus
   an ``(L, B*S, k)`` weight buffer when asked); the next ``B*S`` entries receive the
   attention mask of the step, the last one ``cache length != 0`` where that length is a
   device tensor (static caches).
2. Each MoE layer's hook copies its ``(T, k)`` indices into its block: a device-to-device
   copy, no host synchronisation.
3. A forward hook on the stack issues one non-blocking copy of the buffer to pinned host
   memory (CUDA; on the CPU the buffer already is host memory), records an event, and hands
   the step to a background thread.
4. The thread waits for the event, drops padding (mask 0) tokens, appends each batch row's
   tokens to that row's open sequence (a KV-cache continuation such as a ``generate()``
   decode step extends the open rows; anything else closes them and opens B new ones) and
   writes closed sequences to an Arrow file or keeps them in memory. A continuation must
   fit the open rows exactly (same batch size, cache length = positions recorded so far);
   one that does not raises an error naming the model class and the step, so no wrong
   sequence structure is ever written.
"""

from __future__ import annotations

import os
import queue
import threading
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .._trace import Trace
from ._sites import MoESite, find_index_args, read_router_output
from ._steps import arg_names, batch_shape, bind, find_cache, find_masks

__all__ = ["Recorder"]


def _id_dtype(num_experts: int) -> torch.dtype:
    # one extra value is never needed: the mask column holds 0/1
    if num_experts <= 256:
        return torch.uint8
    if num_experts <= 32768:
        return torch.int16
    return torch.int32


class _Step:
    """One forward of one layer group: host metadata, device buffers, then host buffers."""

    __slots__ = (
        "B", "S", "T", "index", "past", "deferred", "had_deferred", "mask", "ids", "w", "seen",
        "domain", "host_ids", "host_w", "event",
    )  # fmt: skip

    def __init__(
        self, B: int | None, S: int | None, index: int, past: int, deferred: Any, mask: Any,
        domain: Any,
    ):  # fmt: skip
        self.B = B
        self.S = S
        self.T = None if B is None or S is None else B * S
        self.index = index  # 1-based forward number of this group in this capture
        self.past = past  # positions before this step (known on the host), else 0
        self.deferred = deferred  # device scalar: cache length of a static cache, or None
        self.had_deferred = deferred is not None
        self.mask = mask
        self.ids: torch.Tensor | None = None
        self.w: torch.Tensor | None = None
        self.seen: list[bool] = []
        self.domain = domain
        self.host_ids: torch.Tensor | None = None
        self.host_w: torch.Tensor | None = None
        self.event: Any = None


class _Group:
    """One layer stack whose MoE layers share every token (one trace per group)."""

    def __init__(self, name: str, stack: nn.Module, sites: list[MoESite]):
        self.name = name
        self.stack = stack
        self.sites = sites
        self.L = len(sites)
        self.k = sites[0].top_k
        self.E = max(s.num_experts for s in sites)
        self.id_dtype = _id_dtype(self.E)
        self.device = _module_device(sites[0].block)
        self.argnames = arg_names(stack)
        self.outer_key = "attention_mask"  # which mask of the outer model is this group's
        self.forwards = 0
        self.current: _Step | None = None


def _module_device(mod: nn.Module) -> torch.device:
    for p in mod.parameters():
        return p.device
    for b in mod.buffers():
        return b.device
    return torch.device("cpu")


class _Sink:
    """Consumer-side state of one group: open rows and finished sequences (worker thread)."""

    def __init__(self, L: int, k: int, writer: Any, with_weights: bool):
        self.L, self.k = L, k
        self.writer = writer
        self.with_weights = with_weights
        self.open_ids: list[list[np.ndarray]] = []
        self.open_w: list[list[np.ndarray]] = []
        self.open_dom: list[Any] = []
        self.open_len = 0  # positions (padding included) recorded in the open rows
        self.ids: list[np.ndarray] = []
        self.w: list[np.ndarray] = []
        self.lengths: list[int] = []
        self.domains: list[Any] = []

    def _finish(self, chunks: list[np.ndarray], wchunks: list[np.ndarray], dom: Any) -> None:
        ids = np.concatenate(chunks) if chunks else np.zeros((0, self.L, self.k), np.uint8)
        w = None
        if self.with_weights:
            w = np.concatenate(wchunks) if wchunks else np.zeros((0, self.L, self.k), np.float32)
        if self.writer is not None:
            self.writer.write_sequence(ids, domain=dom, weights=w)
            return
        self.ids.append(ids)
        if w is not None:
            self.w.append(w)
        self.lengths.append(int(ids.shape[0]))
        self.domains.append(dom)

    def close_rows(self) -> None:
        for b in range(len(self.open_ids)):
            self._finish(
                self.open_ids[b], self.open_w[b] if self.with_weights else [], self.open_dom[b]
            )
        self.open_ids, self.open_w, self.open_dom = [], [], []
        self.open_len = 0

    def open_rows(self, B: int, domain: Any) -> None:
        self.close_rows()
        self.open_ids = [[] for _ in range(B)]
        self.open_w = [[] for _ in range(B)]
        self.open_dom = [domain] * B

    def snapshot(self) -> tuple[list[np.ndarray], list[np.ndarray], list[int], list[Any]]:
        ids, w, lengths, doms = list(self.ids), list(self.w), list(self.lengths), list(self.domains)
        for b in range(len(self.open_ids)):
            c = self.open_ids[b]
            a = np.concatenate(c) if c else np.zeros((0, self.L, self.k), np.uint8)
            ids.append(a)
            if self.with_weights:
                cw = self.open_w[b]
                w.append(np.concatenate(cw) if cw else np.zeros((0, self.L, self.k), np.float32))
            lengths.append(int(a.shape[0]))
            doms.append(self.open_dom[b])
        return ids, w, lengths, doms


class Recorder:
    """Installs the hooks, owns the worker thread; the engine behind ``lrc_kernels.torch``."""

    def __init__(
        self,
        model: nn.Module,
        sites: list[MoESite],
        *,
        weights: bool,
        domain: Any,
        writers: dict[str, Any] | None,
        max_pending: int = 8,
    ):
        self.model = model
        self.weights = bool(weights)
        self.domain = domain
        self.groups: dict[str, _Group] = {}
        by_stack: dict[str, list[MoESite]] = {}
        for s in sites:
            by_stack.setdefault(s.stack_path, []).append(s)
        for stack_path, ss in by_stack.items():
            name = ss[0].group
            if name in self.groups:  # two stacks with the same last name: use the full path
                name = stack_path
            ks = {s.top_k for s in ss}
            if len(ks) != 1:
                raise ValueError(
                    f"MoE layers of {stack_path or 'the model'} use different top-k values "
                    f"{sorted(ks)}; select layers with one top-k (layers=[...])"
                )
            stack = model.get_submodule(stack_path) if stack_path else model
            g = _Group(name, stack, ss)
            seq2seq = bool(getattr(getattr(model, "config", None), "is_encoder_decoder", False))
            if seq2seq and "decoder" in stack_path.rsplit(".", 1)[-1]:
                g.outer_key = "decoder_attention_mask"
            self.groups[name] = g
        self.sinks = {
            n: _Sink(g.L, g.k, (writers or {}).get(n), self.weights) for n, g in self.groups.items()
        }
        self._handles: list[Any] = []
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, int(max_pending)))
        self._free: dict[torch.dtype, deque] = {}
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None
        self.stats = {"forwards": 0, "transfers": 0, "tokens": 0}
        self._model_names = arg_names(model)
        self._outer: dict[str, torch.Tensor] = {}  # 2-D masks the outer model received

    # ------------------------------------------------------------------ hooks
    def install(self) -> None:
        # the outer model first: its pre-hook runs before those of the stacks inside it
        self._handles.append(
            self.model.register_forward_pre_hook(self._outer_pre, with_kwargs=True)
        )
        self._handles.append(self.model.register_forward_hook(self._outer_post))
        for g in self.groups.values():
            self._handles.append(
                g.stack.register_forward_pre_hook(self._make_stack_pre(g), with_kwargs=True)
            )
            self._handles.append(g.stack.register_forward_hook(self._make_stack_post(g)))
            for i, site in enumerate(g.sites):
                if site.mode == "experts":
                    assert site.experts is not None
                    h = site.experts.register_forward_pre_hook(
                        self._make_experts_hook(g, i), with_kwargs=True
                    )
                else:
                    h = site.router.register_forward_hook(self._make_router_hook(g, i))
                self._handles.append(h)
        self._thread = threading.Thread(target=self._work, name="lrc-capture", daemon=True)
        self._thread.start()

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []
        for g in self.groups.values():
            g.current = None
        self._outer = {}

    def _outer_pre(self, mod: nn.Module, args: tuple, kwargs: dict) -> None:
        kw = bind(self._model_names, args, kwargs)
        self._outer = {
            k: v
            for k in ("attention_mask", "decoder_attention_mask")
            if isinstance(v := kw.get(k), torch.Tensor) and v.ndim == 2
        }

    def _outer_post(self, mod: nn.Module, args: tuple, out: Any) -> None:
        self._outer = {}

    def _make_stack_pre(self, g: _Group):
        names = g.argnames

        def pre(mod: nn.Module, args: tuple, kwargs: dict) -> None:
            kw = bind(names, args, kwargs)
            g.forwards += 1
            step = self._attribute(mod, g, kw)
            if step.T is not None:
                with torch.no_grad():
                    self._alloc(g, step, step.T)
            g.current = step

        return pre

    def _where(self, g: _Group, index: int, B: Any = None, S: Any = None) -> str:
        shape = "" if B is None else f", {B} x {S} tokens"
        return f"{type(self.model).__name__}, layer group {g.name!r}, forward #{index}{shape}"

    def _attribute(self, mod: nn.Module, g: _Group, kw: dict[str, Any]) -> _Step:
        """Host-side facts of one stack forward: shape, mask, and past length (or a device one)."""
        B, S = batch_shape(kw)
        outer = self._outer.pop(g.outer_key, None)
        if B is None or S is None:
            return _Step(None, None, g.forwards, 0, None, None, self.domain)
        where = self._where(g, g.forwards, B, S)
        mask, four_d = find_masks(kw, B, S, outer)
        if mask is None and four_d and B > 1:
            raise RuntimeError(
                f"lrc_kernels.torch.capture: cannot tell the padding of {where}: "
                "neither the layer stack nor the model received a 2-D attention mask (only a "
                "4-D one, as with cache_implementation='static'), so padded tokens cannot be "
                "told from real ones. Use the default dynamic cache, or capture one row at a time."
            )
        cache = find_cache(kw)
        past_mask = None if mask is None else int(mask.shape[1]) - S
        deferred = None
        past = past_mask
        if cache is not None and isinstance(cache.length, int):
            if past_mask is not None and past_mask != cache.length:
                raise RuntimeError(
                    f"lrc_kernels.torch.capture: cannot place {where} in a "
                    f"sequence: its KV cache ({cache.kind}, argument {cache.name!r}) holds "
                    f"{cache.length} tokens but its attention mask covers {past_mask} tokens "
                    "before this step. Pass an attention mask that covers the cached tokens."
                )
            past = cache.length
        elif cache is not None and past_mask is None:
            if isinstance(cache.length, torch.Tensor):
                deferred = cache.length
            else:
                raise RuntimeError(
                    f"lrc_kernels.torch.capture: cannot tell whether {where} "
                    f"continues a sequence: the length of its KV cache ({cache.kind}, argument "
                    f"{cache.name!r}) cannot be read and no 2-D attention mask came with it. "
                    "Pass attention_mask, or report this cache type."
                )
        return _Step(B, S, g.forwards, past or 0, deferred, mask, self.domain)

    def _alloc(self, g: _Group, step: _Step, T: int) -> None:
        L, k = g.L, g.k
        # layer-major: each layer's (T, k) block is contiguous (a plain converting copy),
        # followed by the T mask values and one continuation flag
        step.ids = torch.empty(L * T * k + T + 1, dtype=g.id_dtype, device=g.device)
        if step.mask is not None:
            step.ids[L * T * k : L * T * k + T].copy_(step.mask[:, -step.S :].reshape(-1))
        if step.deferred is not None:
            step.ids[-1:].copy_((step.deferred != 0).reshape(1))
        if self.weights:
            step.w = torch.empty((L, T, k), dtype=torch.float32, device=g.device)
        step.seen = [False] * L

    def _store(self, g: _Group, i: int, idx: Any, w: Any) -> None:
        step = g.current
        if step is None:  # e.g. activation-checkpointing recompute during backward
            return
        site = g.sites[i]
        if idx is None:
            raise RuntimeError(
                f"lrc_kernels.torch.capture: could not read the routing decision of MoE layer "
                f"{site.path} ({type(site.router).__name__}, mode {site.mode!r}): no (tokens, "
                f"k={site.top_k}) integer indices found. Please report this model type."
            )
        if step.ids is None:
            # batch shape unknown before the layers ran: one sequence of all tokens
            step.B, step.S, step.T = 1, int(idx.shape[0]), int(idx.shape[0])
            self._alloc(g, step, step.T)
        if idx.shape[0] != step.T or idx.shape[1] != g.k:
            raise RuntimeError(
                f"lrc_kernels.torch.capture: MoE layer {site.path} routed a "
                f"{tuple(idx.shape)} index tensor, expected ({step.T}, {g.k}) for a batch of "
                f"{step.B} x {step.S} tokens and top-k {g.k}. Models that drop or pack tokens "
                "before the MoE layers are not supported."
            )
        Tk = step.T * g.k
        step.ids[i * Tk : (i + 1) * Tk].view(step.T, g.k).copy_(idx.detach())
        if step.w is not None:
            if w is None:
                raise RuntimeError(
                    f"lrc_kernels.torch.capture: MoE layer {site.path} exposes no gate weights; "
                    "capture with weights=False"
                )
            step.w[i].copy_(w.detach().reshape(step.T, g.k))
        step.seen[i] = True

    def _make_experts_hook(self, g: _Group, i: int):
        def hook(mod: nn.Module, args: tuple, kwargs: dict) -> None:
            if g.current is None:
                return
            idx, w = find_index_args(args, kwargs, g.sites[i].num_experts)
            with torch.no_grad():
                self._store(g, i, idx, w)

        return hook

    def _make_router_hook(self, g: _Group, i: int):
        site = g.sites[i]

        def hook(mod: nn.Module, args: tuple, out: Any) -> None:
            if g.current is None:
                return
            with torch.no_grad():
                idx, w = read_router_output(site, mod, out, args)
                self._store(g, i, idx, w)

        return hook

    def _make_stack_post(self, g: _Group):
        def post(mod: nn.Module, args: tuple, out: Any) -> None:
            step, g.current = g.current, None
            if step is None:
                return
            if step.ids is None or not all(step.seen):
                missing = [g.sites[j].path for j in range(g.L) if not step.seen or not step.seen[j]]
                raise RuntimeError(
                    "lrc_kernels.torch.capture: MoE layers did not run in this forward: "
                    f"{missing}. Layer drop in training mode? Call model.eval(), or capture "
                    "only the layers that run (layers=[...])."
                )
            self._submit(g, step)

        return post

    # ------------------------------------------------------------ transfer
    def _host_buffer(self, like: torch.Tensor) -> torch.Tensor:
        free = self._free.setdefault(like.dtype, deque())
        n = like.numel()
        for _ in range(len(free)):
            buf = free.popleft()
            if buf.numel() >= n:
                return buf
            # too small for this step: drop it, a larger one replaces it
        return torch.empty(max(n, 1 << 16), dtype=like.dtype, pin_memory=True)

    def _submit(self, g: _Group, step: _Step) -> None:
        assert step.ids is not None
        ids, w = step.ids, step.w
        if ids.device.type == "cuda":
            step.host_ids = self._host_buffer(ids)
            step.host_ids[: ids.numel()].view(ids.shape).copy_(ids, non_blocking=True)
            if w is not None:
                step.host_w = self._host_buffer(w)
                step.host_w[: w.numel()].view(w.shape).copy_(w, non_blocking=True)
            step.event = torch.cuda.Event()
            step.event.record(torch.cuda.current_stream(ids.device))
            self.stats["transfers"] += 1 + (w is not None)
        elif ids.device.type == "cpu":
            step.host_ids, step.host_w = ids, w
        else:  # other accelerators: a plain (synchronising) copy, made once per forward
            self.stats["transfers"] += 1 + (w is not None)
            step.host_ids = ids.to("cpu")
            step.host_w = None if w is None else w.to("cpu")
        step.ids = step.w = step.deferred = None  # the device side is done with
        self.stats["forwards"] += 1
        self._queue.put((g.name, step))

    # -------------------------------------------------------------- worker
    def _work(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is None:
                    return
                if self.error is None:
                    self._process(item)
            except BaseException as exc:  # reported to the user on exit / trace()
                self.error = exc
            finally:
                self._queue.task_done()

    def _process(self, item: tuple) -> None:
        name, step = item
        if step.event is not None:
            step.event.synchronize()
        g = self.groups[name]
        sink = self.sinks[name]
        L, k, B, S = g.L, g.k, step.B, step.S
        T = B * S
        hid, hw = step.host_ids, step.host_w
        arr = hid.reshape(-1)[: L * T * k + T + 1].numpy()
        ids = arr[: L * T * k].reshape(L, B, S, k).transpose(1, 2, 0, 3)  # (B, S, L, k)
        warr = None
        if hw is not None:
            warr = hw.reshape(-1)[: L * T * k].numpy().reshape(L, B, S, k).transpose(1, 2, 0, 3)
        has_mask = step.mask is not None
        mask = arr[L * T * k : L * T * k + T].reshape(B, S) != 0 if has_mask else None
        cont = bool(arr[-1]) if step.had_deferred else step.past > 0
        self._place(g, sink, step, cont)
        for b in range(B):
            if mask is None:
                sink.open_ids[b].append(ids[b].copy())  # never a view of a pooled buffer
                if warr is not None:
                    sink.open_w[b].append(warr[b].copy())
            else:
                m = mask[b]
                sink.open_ids[b].append(ids[b][m])
                if warr is not None:
                    sink.open_w[b].append(warr[b][m])
        sink.open_len += S
        self.stats["tokens"] += int(mask.sum()) if mask is not None else B * S
        if step.event is not None:  # hand the pinned buffers back for reuse
            self._free.setdefault(hid.dtype, deque()).append(hid)
            if hw is not None:
                self._free.setdefault(hw.dtype, deque()).append(hw)

    def _place(self, g: _Group, sink: _Sink, step: _Step, cont: bool) -> None:
        """Open new rows for a fresh step; check that a continuation fits the open rows."""
        if not cont:
            sink.open_rows(step.B, step.domain)
            return
        where = self._where(g, step.index, step.B, step.S)
        known = "" if step.had_deferred else f" holds {step.past} tokens"
        if not sink.open_ids:
            raise RuntimeError(
                f"lrc_kernels.torch.capture: cannot attribute {where}: its KV cache{known} "
                "(a decode step), but no sequence is open in this capture. Was the prefill "
                "run outside the capture block? Start the capture before the prompt's forward."
            )
        if len(sink.open_ids) != step.B:
            raise RuntimeError(
                f"lrc_kernels.torch.capture: cannot attribute {where}: a cached continuation "
                f"step of {step.B} rows followed {len(sink.open_ids)} open sequences. The "
                "batch size changed between generation steps (beam search with reordering, "
                "or sequences removed): capture such runs one prompt at a time."
            )
        if not step.had_deferred and step.past != sink.open_len:
            raise RuntimeError(
                f"lrc_kernels.torch.capture: cannot attribute {where}: its KV cache holds "
                f"{step.past} positions but the open sequences have {sink.open_len} recorded "
                "positions (padding included). The cache does not belong to the sequences "
                "recorded so far."
            )

    # ------------------------------------------------------------- results
    def drain(self) -> None:
        """Wait until the worker has processed every submitted step."""
        self._queue.join()

    def stop(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None
        if self.error is None:
            try:
                for sink in self.sinks.values():
                    sink.close_rows()
            except BaseException as exc:
                self.error = exc

    def build_trace(self, name: str, meta: dict[str, Any]) -> Trace:
        g, sink = self.groups[name], self.sinks[name]
        ids, w, lengths, doms = sink.snapshot()
        experts = np.concatenate(ids) if ids else np.zeros((0, g.L, g.k), np.uint8)
        weights = None
        if self.weights:
            weights = np.concatenate(w) if w else np.zeros((0, g.L, g.k), np.float32)
        offsets = np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)]).astype(np.int64)
        domains = None
        if any(d is not None for d in doms):
            domains = ["" if d is None else str(d) for d in doms]
        return Trace(experts, offsets, num_experts=g.E, domains=domains, weights=weights, meta=meta)


def group_paths(out: Any, names: list[str]) -> dict[str, Path]:
    """Output file per group: the path itself for one group, ``stem.<group>.suffix`` else."""
    if isinstance(out, dict):
        missing = [n for n in names if n not in out]
        if missing:
            raise ValueError(f"out has no path for layer groups {missing}; groups: {names}")
        return {n: Path(os.fspath(out[n])) for n in names}
    p = Path(os.fspath(out))
    if len(names) == 1:
        return {names[0]: p}
    base, dot, rest = p.name.partition(".")
    return {n: p.with_name(f"{base}.{n}{dot}{rest}") for n in names}
