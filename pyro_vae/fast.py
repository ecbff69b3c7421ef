"""A fast SVI step for any Pyro model/guide pair: the loss captured once per input signature.

On a GPU the kernels of a small VAE take microseconds, so a training step costs what its Python
costs: Pyro's tracing (guide trace, model replay, ``log_prob`` at every site, the surrogate loss, the
parameter capture), then the backward pass and the optimiser. :class:`FastSVI` pays for the tracing
once, not every step, and keeps the model and guide the ordinary Pyro programs they are:

1. **capture** (first step with a new input signature): the objective's own ``differentiable_loss``
   runs once under :func:`torch.fx.experimental.proxy_tensor.make_fx` (``pre_dispatch=True``, real
   tensors), which records every tensor operation it does, random draws included, in an FX graph of
   ATen ops; Pyro's messengers, traces and Python bookkeeping leave nothing behind. The parameters
   the loss uses (found by running it once first, which also creates any that do not exist yet)
   are the graph's first inputs: the very tensors of Pyro's parameter store, which the optimiser
   updates in place, so every replay sees the current values and sends gradients to them.
2. **replay** (every step): the graph runs eagerly under autograd (or compiled, ``compile=``), then
   ``backward()``, the optimiser on the parameters the capture found, and the gradients zeroed, as
   :class:`pyro.infer.SVI` does. With the same random state, the step draws the same noise and gives
   the same loss and gradients as ``SVI`` (``tests/test_fast.py``).

What is specialised, and how it is kept right:

- a graph is per *signature*: the shapes, dtypes and devices of the tensor arguments, the other
  arguments' values, the training mode of the model's and guide's modules, the objective's KL weight
  (:class:`~pyro_vae.objectives.kl.KLWeighted`) and the identity of the parameters. A new batch size
  (the last incomplete batch), ``eval()`` or a KL warm-up step captures again; up to
  ``max_captures`` graphs are kept, least recently used first out;
- a Python decision on a tensor's value during the capture (``if not mask.all()`` in Pyro's
  ``TraceEnum_ELBO``, ``tensor.item()``) is taken with the real value and *guarded*: the graph also
  returns whether every such value is what it was at capture time, and a step whose guard fails is
  thrown away (random state restored) and taken by the slow path instead;
- Pyro's ``torch_item`` (used by ``Trace_ELBO`` for the loss's value) is read as ``detach()`` while
  capturing, and ``warn_if_nan`` does nothing (a NaN loss still reaches the caller, who checks it);
- ``verify=True`` (default) compares the first replay of every graph with the slow path's loss on the
  same random draws, and falls back to the slow path for that signature if they differ.

Anything the capture cannot record (a model drawing with Python's ``random``, a tensor value turned
into a shape) makes that signature fall back to the slow path, with one warning. A JIT objective
(``JitTrace_ELBO``, ``JitTraceEnum_ELBO``) is captured through the objective it compiles.

``compile=`` additionally hands each captured graph (pure ATen, so no graph breaks) to
:func:`torch.compile`: ``"default"`` (Inductor; on the CPU it fuses the elementwise work into C++)
or ``"reduce-overhead"`` (CUDA graphs on a GPU). Inductor then draws random numbers with torch's own
generator (``fallback_random``), so a compiled step draws the same noise as an eager one; the values
agree up to float rounding.
"""

from __future__ import annotations

import contextlib
import math
import operator
import sys
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Any

import pyro
import pyro.infer.util
import pyro.util
import torch
from pyro import poutine
from pyro.infer import ELBO
from pyro.infer.util import zero_grads
from torch.overrides import TorchFunctionMode
from torch.utils import _pytree as pytree

from .objectives.base import capture_key, eager
from .optim import JointOptim

__all__ = [
    "CapturedLoss",
    "FastSVI",
    "capture_loss",
    "dynamo_graph_breaks",
    "eager_objective",
]

#: what a Python decision on a tensor's value goes through
_SCALAR_READS = frozenset(
    {
        torch.Tensor.__bool__,
        torch.Tensor.item,
        torch.Tensor.__float__,
        torch.Tensor.__int__,
        torch.Tensor.__index__,
        torch.Tensor.tolist,
    }
)


class CaptureError(RuntimeError):
    """The loss cannot be captured as a graph (or the graph disagrees with the slow path)."""


def eager_objective(objective: ELBO) -> ELBO:
    """``objective`` without its TorchScript compilation, as it declares
    (:class:`~pyro_vae.objectives.base.Objective`): a compiled objective, also inside
    :class:`~pyro_vae.objectives.kl.KLWeighted`, becomes a shallow copy of the class it compiles."""
    return eager(objective)


@contextlib.contextmanager
def _capturable() -> Iterator[None]:
    """Pyro's ``torch_item`` as ``detach``, ``warn_if_nan`` and ``warn_if_inf`` as no-ops, in every
    module that imported them, for the duration of a capture (single-threaded: module globals)."""
    originals = {
        "torch_item": pyro.infer.util.torch_item,
        "warn_if_nan": pyro.util.warn_if_nan,
        "warn_if_inf": pyro.util.warn_if_inf,
    }

    def torch_item(x: Any) -> Any:
        return x.detach() if isinstance(x, torch.Tensor) else x

    def warn_if_nan(value: Any, *args: Any, **kwargs: Any) -> Any:
        return value

    replacements = {
        "torch_item": torch_item,
        "warn_if_nan": warn_if_nan,
        "warn_if_inf": warn_if_nan,
    }
    patched = []
    for name, module in list(sys.modules.items()):
        if module is None or not (name.startswith("pyro.") or name.startswith("pyro_vae.")):
            continue
        namespace = getattr(module, "__dict__", None)
        if namespace is None:
            continue
        for attr, original in originals.items():
            if namespace.get(attr) is original:
                namespace[attr] = replacements[attr]
                patched.append((namespace, attr, original))
    try:
        yield
    finally:
        for namespace, attr, original in patched:
            namespace[attr] = original


class _BakeScalars(TorchFunctionMode):
    """During a capture: answer a Python read of a tensor's value (``bool(t)``, ``t.item()``) with
    the real value, and remember the tensor and the value, for the graph's guard."""

    def __init__(self) -> None:
        super().__init__()
        self.reads: list[tuple[torch.Tensor, Any]] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        kwargs = kwargs or {}
        if func is torch.Tensor.register_hook:
            raise CaptureError(
                "the loss registers a gradient hook (e.g. the dreg objective), which a graph of "
                "tensor operations cannot hold"
            )
        if func in _SCALAR_READS:
            from torch.fx.experimental.proxy_tensor import disable_proxy_modes_tracing

            with disable_proxy_modes_tracing():
                value = func(*args, **kwargs)
            self.reads.append((args[0], value))
            return value
        return func(*args, **kwargs)


def _guard(reads: list[tuple[torch.Tensor, Any]]) -> torch.Tensor | None:
    """One boolean tensor: every value read during the capture is what it was then."""
    if not reads:
        return None
    checks = []
    for t, value in reads:
        want = torch.as_tensor(value, device=t.device)
        same = t.detach() == want.to(t.dtype) if t.dtype != torch.bool else t.detach() == want
        checks.append(same.all().reshape(1))
    return torch.cat(checks).all()


def _arg_key(leaf: Any) -> Any:
    if isinstance(leaf, torch.Tensor):
        return ("tensor", tuple(leaf.shape), leaf.dtype, leaf.device, leaf.requires_grad)
    if leaf is None or isinstance(leaf, (bool, int, float, str)):
        return (type(leaf).__name__, leaf)
    return ("object", id(leaf))  # anything else is baked into the graph: keyed by identity


def _owner_training(fn: Any) -> Any:
    owner = getattr(fn, "__self__", None)
    return getattr(owner, "training", None)


def _rng_state(devices: set[torch.device]) -> list[tuple[torch.device, torch.Tensor]]:
    state = [(torch.device("cpu"), torch.get_rng_state())]
    for d in devices:
        if d.type == "cuda":
            state.append((d, torch.cuda.get_rng_state(d)))
    return state


def _set_rng_state(state: list[tuple[torch.device, torch.Tensor]]) -> None:
    for d, s in state:
        if d.type == "cpu":
            torch.set_rng_state(s)
        else:
            torch.cuda.set_rng_state(s, d)


class _Shapes(torch.fx.Interpreter):
    """Runs a graph once and keeps the (shape, dtype) of every tensor it computes."""

    def __init__(self, gm: torch.fx.GraphModule) -> None:
        super().__init__(gm)
        self.meta: dict[torch.fx.Node, Any] = {}

    def run_node(self, n: torch.fx.Node) -> Any:
        out = super().run_node(n)
        if isinstance(out, torch.Tensor):
            self.meta[n] = (tuple(out.shape), out.dtype, out.device)
        return out


def _is_number(value: Any, target: float) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == target


def _identity_source(node: torch.fx.Node) -> Any:
    """The input a node would be the same tensor as, if its shape and dtype are unchanged."""
    aten = torch.ops.aten
    t, args = node.target, node.args
    if node.kwargs:
        return None
    if t in (aten.expand.default, aten.reshape.default, aten.view.default):
        return args[0]
    if t in (aten.add.Tensor, aten.sub.Tensor) and len(args) == 2 and _is_number(args[1], 0):
        return args[0]
    if t in (aten.mul.Tensor, aten.div.Tensor) and len(args) == 2 and _is_number(args[1], 1):
        return args[0]
    if t is operator.getitem and isinstance(args[0], torch.fx.Node):
        if args[0].target is aten.broadcast_tensors.default:
            return args[0].args[0][args[1]]
    return None


def _mutates(node: torch.fx.Node) -> bool:
    t = node.target
    return isinstance(t, torch._ops.OpOverload) and t._schema.is_mutable


def _removable(node: torch.fx.Node) -> bool:
    """Dead, and dropping it changes nothing: no random draw, no write to a tensor read elsewhere."""
    if node.op not in ("call_function", "get_attr") or node.users:
        return False
    t = node.target
    if node.op == "get_attr":
        return True
    if t is operator.getitem:
        return True
    if not isinstance(t, torch._ops.OpOverload) or torch.Tag.nondeterministic_seeded in t.tags:
        return False
    if _mutates(node):  # only a write to a fresh tensor nothing else reads (no view of another)
        fresh = (
            torch.ops.aten.lift_fresh_copy.default,
            torch.ops.aten.empty.memory_format,
            torch.ops.aten.clone.default,
        )
        return all(
            not isinstance(a, torch.fx.Node) or (len(a.users) == 1 and a.target in fresh)
            for a in node.args
        )
    return True


def _simplify(gm: torch.fx.GraphModule, tensors: list[torch.Tensor]) -> torch.fx.GraphModule:
    """Make the graph cheaper to replay op by op, computing the same values and gradients.

    - ops that return their input unchanged (``expand``/``reshape``/``view`` to the input's shape,
      ``+ 0``, ``- 0``, ``* 1``, ``/ 1``, a ``broadcast_tensors`` that broadcasts nothing) are
      replaced by the input, unless something writes to that input in place;
    - dead ops are dropped (never a random draw, so the random stream stays the slow path's);
    - a grad-mode switch overridden by the next one before any op runs is dropped.

    Shapes come from running the graph once on ``tensors`` (on a forked random state).
    """
    graph = gm.graph
    shapes = _Shapes(gm)
    devices = [t.device for t in tensors if t.device.type == "cuda"]
    grad = torch.is_grad_enabled()
    try:
        with torch.random.fork_rng(devices=devices):
            shapes.run(*tensors)
    finally:
        torch.set_grad_enabled(grad)
    meta = shapes.meta
    written = {
        a for n in graph.nodes if _mutates(n) for a in n.args if isinstance(a, torch.fx.Node)
    }
    for node in list(graph.nodes):
        if node.op != "call_function":
            continue
        src = _identity_source(node)
        if not isinstance(src, torch.fx.Node) or src in written or node in written:
            continue
        if node in meta and meta.get(src) == meta[node]:
            node.replace_all_uses_with(src)
            graph.erase_node(node)
    changed = True
    while changed:
        changed = False
        for node in reversed(list(graph.nodes)):
            if _removable(node):
                graph.erase_node(node)
                changed = True
    nodes = list(graph.nodes)
    setter = torch._C._set_grad_enabled
    for node, nxt in zip(nodes, nodes[1:]):
        if node.op == "call_function" and node.target is setter and not node.users:
            if nxt.op == "call_function" and nxt.target is setter:
                graph.erase_node(node)
    graph.lint()
    gm.recompile()
    return gm


class CapturedLoss:
    """One captured loss: an FX graph of the objective's ``differentiable_loss`` on one signature.

    Calling it with the flat tensor arguments (the parameters are added in front) returns
    ``(loss, guard)``: the loss tensor (value: the objective's loss, gradient: its surrogate's) and a
    boolean tensor that is true when every tensor value the capture read is unchanged (``None``
    when it read none).
    """

    def __init__(
        self,
        graph: torch.fx.GraphModule,
        spec: pytree.TreeSpec,
        params: list[tuple[str, torch.Tensor]],
        guarded: bool,
        compile: str | None = None,
    ) -> None:
        self.graph = graph
        self.spec = spec
        #: (name in Pyro's parameter store, unconstrained tensor) of every parameter the loss uses
        self.params = params
        self.param_tensors = [p for _, p in params]
        self.guarded = guarded
        #: whether the first replay has been checked against the slow path (``FastSVI(verify=)``)
        self.verified = False
        #: whether a JointOptim has been handed these parameters once (FastSVI's shortcut)
        self.optim_ready = False
        # the generated forward itself: nn.Module.__call__ and GraphModule's wrapper cost ~50 us
        self.fn: Callable[..., Any] = graph.forward
        self.compile = compile
        if compile is not None:
            self.fn = compile_graph(graph, compile)

    def __call__(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        out = self.fn(*self.param_tensors, *tensors)
        return (out[0], out[1]) if self.guarded else (out[0], None)

    def params_current(self) -> bool:
        """Whether Pyro's parameter store still holds the tensors the graph was captured with."""
        store = pyro.get_param_store()
        table = getattr(store, "_params", None)
        if table is None:  # another parameter store: ask through the public interface
            return all(
                name in store and store.get_param(name).unconstrained() is p
                for name, p in self.params
            )
        return all(table.get(name) is p for name, p in self.params)

    @property
    def num_ops(self) -> int:
        return sum(1 for n in self.graph.graph.nodes if n.op == "call_function")


def compile_options(mode: str) -> dict[str, Any]:
    """Inductor's options for ``compile=mode``: ``"default"``, ``"reduce-overhead"`` (CUDA graphs) or
    ``"max-autotune"``, always drawing random numbers with torch's generator like the eager graph."""
    options: dict[str, Any] = {"fallback_random": True}
    if mode == "reduce-overhead":
        options["triton.cudagraphs"] = True
    elif mode == "max-autotune":
        options.update({"max_autotune": True, "triton.cudagraphs": True})
    elif mode != "default":
        raise ValueError(
            f"compile={mode!r}: use 'default', 'reduce-overhead' or 'max-autotune' (or None)"
        )
    return options


def compile_graph(graph: torch.fx.GraphModule, mode: str) -> Callable[..., Any]:
    """``torch.compile`` of a captured graph (pure ATen: one graph, no breaks), see
    :func:`compile_options`."""
    return torch.compile(graph, fullgraph=True, dynamic=False, options=compile_options(mode))


def capture_loss(
    objective: ELBO,
    model: Callable[..., Any],
    guide: Callable[..., Any],
    *args: Any,
    compile: str | None = None,
    **kwargs: Any,
) -> CapturedLoss:
    """Capture ``objective.differentiable_loss(model, guide, *args, **kwargs)`` as a graph.

    First the loss runs once as it is (no gradients), which creates any parameter not yet in Pyro's
    parameter store and names those the loss uses; they become the graph's first inputs (the
    unconstrained tensors of the store, so that gradients reach them), the tensor arguments its
    others. Draws no random numbers from the global generators (both runs are on a forked state).
    Raises :class:`CaptureError` when the loss cannot be recorded.
    """
    objective = eager_objective(objective)
    leaves, spec = pytree.tree_flatten((args, kwargs))
    where = [i for i, leaf in enumerate(leaves) if isinstance(leaf, torch.Tensor)]
    tensors = [leaves[i] for i in where]
    cuda = list({t.device for t in tensors if t.device.type == "cuda"})
    with (
        torch.random.fork_rng(devices=cuda),
        poutine.trace(param_only=True) as discovery,
        warnings.catch_warnings(),
        torch.no_grad(),
    ):
        warnings.simplefilter("ignore")
        objective.loss(model, guide, *args, **kwargs)
    found = OrderedDict(
        (name, site["value"].unconstrained())
        for name, site in discovery.trace.nodes.items()
        if site["type"] == "param"
    )
    params = list(found.values())
    baker = _BakeScalars()

    def loss_fn(*flat: torch.Tensor) -> tuple[torch.Tensor, ...]:
        # flat = parameters, then tensor arguments; the model finds the parameters in the store
        full = list(leaves)
        for i, t in zip(where, flat[len(params) :]):
            full[i] = t
        a, kw = pytree.tree_unflatten(full, spec)
        with baker:
            loss = objective.differentiable_loss(model, guide, *a, **kw)
        if not isinstance(loss, torch.Tensor):
            raise CaptureError(f"{type(objective).__name__}.differentiable_loss gave no tensor")
        guard = _guard(baker.reads)
        return (loss,) if guard is None else (loss, guard)

    from torch.fx.experimental.proxy_tensor import make_fx

    try:
        with (
            torch.random.fork_rng(devices=cuda),
            _capturable(),
            poutine.trace(param_only=True) as used,
            warnings.catch_warnings(),
        ):
            warnings.simplefilter("ignore")
            graph = make_fx(loss_fn, pre_dispatch=True)(*params, *tensors)
    except CaptureError:
        raise
    except Exception as e:  # anything make_fx cannot record
        raise CaptureError(f"{type(e).__name__}: {str(e).splitlines()[0]}") from e
    names = [n for n, site in used.trace.nodes.items() if site["type"] == "param"]
    if set(names) != set(found):
        raise CaptureError("the loss used other parameters when captured than when run")
    _simplify(graph, [*params, *tensors])
    return CapturedLoss(graph, spec, list(found.items()), bool(baker.reads), compile)


class FastSVI:
    """:class:`pyro.infer.SVI` whose ``step`` replays a captured graph of the loss (see the module
    docstring): the same model, guide, optimiser and objective, the same losses and gradients on
    the same random draws, without Pyro's per-step tracing.

    - ``compile``: ``None`` (replay the ATen graph eagerly), ``"default"`` (Inductor) or
      ``"reduce-overhead"`` (Inductor with CUDA graphs), see :func:`compile_graph`;
    - ``verify``: check each new graph's first loss against the slow path's on the same draws;
    - ``max_captures``: graphs kept at once (signatures beyond that are captured again when seen);
    - ``fallback``: on a signature that cannot be captured, warn once and take the slow path for it
      (``False``: raise :class:`CaptureError`).

    ``stats`` counts captures, replayed steps, slow steps and guard failures.
    """

    def __init__(
        self,
        model: Callable[..., Any],
        guide: Callable[..., Any],
        optim: Any,
        loss: ELBO,
        *,
        compile: str | None = None,
        verify: bool = True,
        max_captures: int = 8,
        fallback: bool = True,
    ) -> None:
        if compile is not None:
            compile_options(compile)  # refuse an unknown mode now, not at the first step
        self.model = model
        self.guide = guide
        self.optim = optim
        self.loss = loss
        self.compile = compile
        self.verify = verify
        self.max_captures = max_captures
        self.fallback = fallback
        self._graphs: OrderedDict[Any, CapturedLoss | CaptureError] = OrderedDict()
        self.stats = {"captures": 0, "replayed": 0, "slow": 0, "guard_failures": 0}

    # -- the slow path: exactly SVI.step ---------------------------------------------------------
    def slow_step(self, *args: Any, **kwargs: Any) -> float:
        """One step as :meth:`pyro.infer.SVI.step` takes it."""
        self.stats["slow"] += 1
        with poutine.trace(param_only=True) as param_capture:
            loss = self.loss.loss_and_grads(self.model, self.guide, *args, **kwargs)
        params = {site["value"].unconstrained() for site in param_capture.trace.nodes.values()}
        self.optim(params)
        zero_grads(params)
        return float(loss)

    def evaluate_loss(self, *args: Any, **kwargs: Any) -> float:
        """As :meth:`pyro.infer.SVI.evaluate_loss` (no capture: evaluation is not the hot path)."""
        with torch.no_grad():
            return float(self.loss.loss(self.model, self.guide, *args, **kwargs))

    # -- the fast path ---------------------------------------------------------------------------
    def signature(self, args: tuple, kwargs: dict) -> tuple[Any, list[torch.Tensor]]:
        """The key of the graph for these arguments, and their tensors in the graph's order."""
        if not kwargs and all(type(a) is torch.Tensor for a in args):  # the usual step(x)
            tensors = list(args)
            leaves = tuple(_arg_key(a) for a in args)
            spec: Any = len(args)
        else:
            flat, spec = pytree.tree_flatten((args, kwargs))
            tensors = [leaf for leaf in flat if isinstance(leaf, torch.Tensor)]
            leaves = tuple(_arg_key(leaf) for leaf in flat)
        key = (
            leaves,
            spec,
            _owner_training(self.model),
            _owner_training(self.guide),
            capture_key(self.loss),
        )
        return key, tensors

    def _captured(self, key: Any, args: tuple, kwargs: dict) -> CapturedLoss | CaptureError:
        entry = self._graphs.get(key)
        if isinstance(entry, CapturedLoss) and not entry.params_current():
            entry = None  # the parameter store was replaced: capture again
        if entry is None:
            self.stats["captures"] += 1
            try:
                entry = capture_loss(
                    self.loss, self.model, self.guide, *args, compile=self.compile, **kwargs
                )
                entry.verified = not self.verify
            except CaptureError as e:
                if not self.fallback:
                    raise
                warnings.warn(
                    f"FastSVI: the loss cannot be captured for this input ({e}); "
                    "these steps take the slow path",
                    RuntimeWarning,
                    stacklevel=3,
                )
                entry = e
            self._graphs[key] = entry
            while len(self._graphs) > self.max_captures:
                self._graphs.popitem(last=False)
        self._graphs.move_to_end(key)
        return entry

    def step(self, *args: Any, **kwargs: Any) -> float:
        """One optimiser step on the loss; returns the loss as a float, as ``SVI.step`` does."""
        key, tensors = self.signature(args, kwargs)
        entry = self._captured(key, args, kwargs)
        if isinstance(entry, CaptureError):
            return self.slow_step(*args, **kwargs)
        check = entry.guarded or not entry.verified
        state = _rng_state({t.device for t in tensors}) if check else None
        loss, guard = entry(*tensors)
        if not entry.verified:
            entry.verified = True
            if not self._agrees(float(loss.detach()), state, args, kwargs):
                bad = CaptureError("the captured graph's loss differs from the slow path's")
                if not self.fallback:
                    raise bad
                warnings.warn(
                    f"FastSVI: {bad}; these steps take the slow path", RuntimeWarning, stacklevel=2
                )
                self._graphs[key] = bad
                _set_rng_state(state)
                return self.slow_step(*args, **kwargs)
        if guard is not None:
            value, ok = torch.stack([loss.detach(), guard.to(loss.dtype)]).tolist()
            if not ok:  # a value the capture decided on changed: redo this step the slow way
                self.stats["guard_failures"] += 1
                _set_rng_state(state)
                return self.slow_step(*args, **kwargs)
        else:
            value = None
        loss.backward()
        params = entry.param_tensors
        if entry.optim_ready and len(self.optim._known) == len(params):
            # every parameter the JointOptim knows is one of ours (ours were registered by an
            # earlier call): its __call__ comes down to this, without the set work
            self.optim.optimizer.step()
        else:
            self.optim(params)
            entry.optim_ready = isinstance(self.optim, JointOptim)
        # SVI's zero_grads(params) in place: the same zeros, without allocating new tensors
        grads = [p.grad for p in params if p.grad is not None]
        if grads:
            torch._foreach_zero_(grads)
        self.stats["replayed"] += 1
        return loss.item() if value is None else value

    def _agrees(self, value: float, state: Any, args: tuple, kwargs: dict) -> bool:
        """The slow path's loss on the random draws the graph just used."""
        after = _rng_state({d for d, _ in state[1:]})
        _set_rng_state(state)
        try:
            reference = eager_objective(self.loss).differentiable_loss(
                self.model, self.guide, *args, **kwargs
            )
            reference = float(reference.detach())
        finally:
            _set_rng_state(after)
        if math.isnan(value) and math.isnan(reference):
            return True
        tol = 1e-5 if self.compile is None else 1e-3
        return math.isclose(value, reference, rel_tol=tol, abs_tol=tol)


def dynamo_graph_breaks(
    objective: ELBO, model: Callable[..., Any], guide: Callable[..., Any], *args: Any
) -> dict[str, Any]:
    """What :func:`torch._dynamo.explain` makes of ``torch.compile`` on the objective's
    ``differentiable_loss`` itself (not on a captured graph): graphs, breaks and their reasons."""
    import torch._dynamo

    objective = eager_objective(objective)

    def loss_fn(*a: Any) -> torch.Tensor:
        return objective.differentiable_loss(model, guide, *a)

    torch._dynamo.reset()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = torch._dynamo.explain(loss_fn)(*args)
    torch._dynamo.reset()
    reasons = sorted({str(b.reason).splitlines()[0] for b in out.break_reasons})
    return {
        "graphs": out.graph_count,
        "graph_breaks": out.graph_break_count,
        "ops": out.op_count,
        "reasons": reasons,
    }
