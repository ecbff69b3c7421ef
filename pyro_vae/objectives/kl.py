"""KL weighting on any objective: beta, linear KL annealing and free bits.

:func:`build_objective` builds a registered objective and, when asked, wraps it in
:class:`KLWeighted`. Beta and annealing scale every latent (unobserved) sample site of both the model
and the guide by a weight, with a Pyro messenger, so that each objective's own estimator sees

.. math:: \\log w = \\log p(x|z) + \\beta_t\\,[\\log p(z) - \\log q(z|x)]

(for the ELBO: reconstruction minus beta times the KL). Free bits adds, per latent dimension d, the
hinge that turns the KL term into the floor of Kingma et al. (2016), eq. 15.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import math
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
from pyro.distributions import Independent
from pyro.distributions.kl import kl_divergence
from pyro.infer import ELBO
from pyro.poutine.messenger import Messenger
from pyro.poutine.util import site_is_subsample
from pyro.util import warn_if_nan

from ..describe import Described
from ..errors import ConfigError
from .base import OBJECTIVES, Objective, is_compiled
from .base import eager as eager_objective
from .base import set_epoch as set_objective_epoch
from .importance import DATA_PLATE, data_dim, subsample_scale

if TYPE_CHECKING:
    from ..config import TrainConfig

#: the training options of KL weighting, which apply to every objective (``--beta``, ...)
KL_OPTIONS = ("beta", "kl_anneal", "kl_anneal_start", "free_bits")


class LatentScale(Messenger):
    """Multiplies the ``scale`` of every unobserved sample site (model and guide) by ``scale``."""

    def __init__(self, scale: float) -> None:
        super().__init__()
        self.scale = scale

    def _process_message(self, msg: dict[str, Any]) -> None:
        if msg["type"] == "sample" and not msg["is_observed"]:
            msg["scale"] = self.scale * msg["scale"]


class SiteRecorder(Messenger):
    """Keeps the last distribution, value and plates of every unobserved sample site it sees."""

    def __init__(self) -> None:
        super().__init__()
        self.sites: dict[str, dict[str, Any]] = {}

    def _postprocess_message(self, msg: dict[str, Any]) -> None:
        if msg["type"] == "sample" and not msg["is_observed"] and not site_is_subsample(msg):
            self.sites[msg["name"]] = {
                "fn": msg["fn"],
                "value": msg["value"],
                "cond_indep_stack": msg["cond_indep_stack"],
            }

    def wrap(self, fn: Callable) -> Callable:
        # functools.wraps keeps __wrapped__, so objectives can still find the method's module (dreg)
        @functools.wraps(fn)
        def recorded(*args: Any, **kwargs: Any) -> Any:
            with self:
                return fn(*args, **kwargs)

        return recorded


def _factors(d: Any) -> Any:
    """Strip :class:`Independent` wrappers: the distribution whose batch dims include the latent dims."""
    while isinstance(d, Independent):
        d = d.base_dist
    return d


def closed_form_kl(q: Any, p: Any) -> torch.Tensor | None:
    """KL(q || p) in closed form, or None where torch/Pyro register none for the pair."""
    try:
        return kl_divergence(q, p)
    except NotImplementedError:
        return None


def per_dimension_kl(
    q: Any, p: Any, value: torch.Tensor, name: str = "z", analytic: bool = True
) -> torch.Tensor:
    """KL(q_d || p_d) per latent dimension, shape ``(*batch, D)`` with D the flattened event of q.

    Needs q and p that factorise over dimensions (independent univariate factors, e.g. a diagonal
    Normal guide and a Normal prior). Uses the analytic KL where one is registered (and ``analytic``),
    else a one-sample Monte Carlo estimate per dimension at ``value``.
    """
    qb, pb = _factors(q), _factors(p)
    if qb.event_shape != () or pb.event_shape != ():
        bad = type(qb if qb.event_shape != () else pb).__name__
        raise ConfigError(
            f"a per-dimension KL needs q({name}|x) and p({name}) that factorise over latent "
            f"dimensions, but site {name!r} has a {bad}; use the diagonal guide and a normal prior, "
            "or drop --free-bits"
        )
    kl = closed_form_kl(qb, pb) if analytic else None
    if kl is None:
        kl = qb.log_prob(value) - pb.log_prob(value)
    event_dims = len(q.event_shape)
    kl = kl.expand(torch.broadcast_shapes(kl.shape, value.shape))
    if event_dims == 0:
        return kl.unsqueeze(-1)
    return kl.reshape(kl.shape[: kl.dim() - event_dims] + (-1,))


def closed_form_kl_sites(model_latents: Sequence[str], guide_latents: Sequence[str]) -> set[str]:
    """The latent sites whose closed-form KL(q || p) is their term of the ELBO, from the order in
    which the model and the guide sample their latents.

    That holds when p's parameters are fixed before the guide draws the site: every latent the model
    samples before it (its possible parents) is drawn by the guide before it too. It fails for the
    lower layer of a hierarchy, p(z1|z2) with q(z1|x) q(z2|z1): there z2 is drawn from z1, and the KL
    at a drawn z2 integrates over every z1 but the one z2 came from (for M1+M2 on MNIST it read 400
    nats per image against 6 from the Monte Carlo estimate). Such sites need the Monte Carlo estimate.
    """
    order = {n: i for i, n in enumerate(guide_latents)}
    ok, earlier = set(), []
    for name in model_latents:
        if name in order and all(order.get(e, math.inf) < order[name] for e in earlier):
            ok.add(name)
        earlier.append(name)
    return ok


def free_bits_penalty(
    guide_sites: dict[str, dict[str, Any]],
    model_sites: dict[str, dict[str, Any]],
    free_bits: float,
    data_plate: str = DATA_PLATE,
) -> torch.Tensor:
    r"""``sum_sites N * sum_d max(0, lambda - KL_d)``, with ``KL_d`` the per-dimension KL averaged over
    particles and the data points of the batch, and ``N`` the number of data points the loss stands
    for: the batch size, or ``N_total`` under a subsampled data plate
    (``pyro.plate("data", N_total, subsample=idx)``), where the loss is ``N_total / B`` times the sum
    over the ``B`` data points of the batch.

    Added to a loss whose KL term is ``N * sum_d KL_d`` (in expectation), it turns that term into
    ``N * sum_d max(lambda, KL_d)``: free bits, Kingma et al. (2016), eq. 15. ``KL_d`` is closed-form
    where that is the ELBO's term (:func:`closed_form_kl_sites`), else a Monte Carlo estimate.
    """
    total: torch.Tensor | float = 0.0
    closed_form = closed_form_kl_sites(list(model_sites), list(guide_sites))  # sites in call order
    for name, g in guide_sites.items():
        if name not in model_sites:
            continue
        kl = per_dimension_kl(
            g["fn"], model_sites[name]["fn"], g["value"], name, analytic=name in closed_form
        )
        kl_d = kl.reshape(-1, kl.shape[-1]).mean(0)
        total = total + _data_points(g, data_plate) * torch.relu(free_bits - kl_d).sum()
    return torch.as_tensor(total)


def _data_points(site: dict[str, Any], data_plate: str) -> float:
    """How many data points a site's term in the loss stands for: ``B * (N_total / B)``.

    ``B`` is the extent of the data plate's dim in the site's value (a plate without a size has
    ``size == -1`` in its frame, so the value, which the plate broadcasts, is the reliable count),
    and ``N_total / B`` the subsampling factor Pyro puts in the site's scale; 1 outside the plate.
    """
    ddim = data_dim(site, data_plate)
    if ddim is None:
        return 1.0
    batch_dims = site["value"].dim() - len(site["fn"].event_shape)
    b = site["value"].shape[batch_dims + ddim] if batch_dims + ddim >= 0 else 1
    return b * subsample_scale(site, data_plate)


class KLWeighted(Described, ELBO, Objective):
    r"""Any objective with its latent terms weighted by :math:`\beta_t` and an optional free-bits floor.

    - ``beta``: the weight on ``log p(z) - log q(z|x)`` of every latent site (beta-VAE, Higgins et al.
      2017), applied inside the wrapped objective's estimator.
    - ``kl_anneal``: epochs of linear warm-up (Bowman et al. 2016), the weight going from
      ``kl_anneal_start`` at epoch 0 to ``beta`` at epoch ``kl_anneal``; the trainer calls
      :meth:`set_epoch`.
    - ``free_bits``: lambda, nats per latent dimension. The loss gains
      ``beta_t * N * sum_d max(0, lambda - KL_d)`` (:func:`free_bits_penalty`), so that for the ELBO
      (exactly with ``meanfield``, in expectation with ``elbo``) the loss is
      ``-sum_n E_q[log p(x_n|z)] + beta_t * N * sum_d max(lambda, KL_d)``. For the importance-weighted
      bounds the same hinge is added to the bound. Needs a guide and prior that factorise per
      dimension.
    """

    def __init__(
        self,
        inner: ELBO,
        beta: float = 1.0,
        kl_anneal: int = 0,
        kl_anneal_start: float = 0.0,
        free_bits: float = 0.0,
        data_plate: str = DATA_PLATE,
    ) -> None:
        super().__init__(
            num_particles=inner.num_particles, max_plate_nesting=inner.max_plate_nesting
        )
        self.inner = inner
        self.beta = float(beta)
        self.kl_anneal = int(kl_anneal)
        self.kl_anneal_start = float(kl_anneal_start)
        self.free_bits = float(free_bits)
        self.data_plate = data_plate
        self.epoch = 0
        if self.free_bits > 0 and self.compiled:
            raise ConfigError(
                "--free-bits needs the latent distributions at every step, which a JIT-compiled "
                "objective hides; use --objective elbo or meanfield"
            )

    @property
    def kl_weight(self) -> float:
        """The weight on the latent terms at the current epoch."""
        if self.kl_anneal > 0:
            t = min(1.0, self.epoch / self.kl_anneal)
            return self.kl_anneal_start + (self.beta - self.kl_anneal_start) * t
        return self.beta

    @property
    def compiled(self) -> bool:  # type: ignore[override]
        return is_compiled(self.inner)

    def unwrapped(self) -> ELBO:
        return self.inner

    def eager(self) -> ELBO:
        plain = eager_objective(self.inner)
        if plain is self.inner:
            return self
        out = copy.copy(self)
        out.inner = plain
        return out

    def capture_key(self) -> float:
        return self.kl_weight

    def set_epoch(self, epoch: int) -> None:
        before = self.kl_weight
        self.epoch = int(epoch)
        if self.compiled and self.kl_weight != before:
            # a compiled objective baked the old weight in as a constant: recompile
            for attr in ("_loss_and_surrogate_loss", "_differentiable_loss"):
                self.inner.__dict__.pop(attr, None)
        set_objective_epoch(self.inner, epoch)

    def _scaled(self) -> contextlib.AbstractContextManager:
        w = self.kl_weight
        return contextlib.nullcontext() if w == 1.0 else LatentScale(w)

    def _get_trace(self, model, guide, args, kwargs):
        return self.inner._get_trace(model, guide, args, kwargs)

    def differentiable_loss(
        self, model: Any, guide: Any, *args: Any, **kwargs: Any
    ) -> torch.Tensor:
        if self.free_bits <= 0:
            with self._scaled():
                return self.inner.differentiable_loss(model, guide, *args, **kwargs)
        rm, rg = SiteRecorder(), SiteRecorder()
        with self._scaled():
            loss = self.inner.differentiable_loss(rm.wrap(model), rg.wrap(guide), *args, **kwargs)
        penalty = free_bits_penalty(rg.sites, rm.sites, self.free_bits, self.data_plate)
        loss = loss + self.kl_weight * penalty.to(loss)
        warn_if_nan(loss, "loss")
        return loss

    def loss(self, model: Any, guide: Any, *args: Any, **kwargs: Any) -> float:
        if self.free_bits <= 0:
            with self._scaled():
                return self.inner.loss(model, guide, *args, **kwargs)
        with torch.no_grad():
            return float(self.differentiable_loss(model, guide, *args, **kwargs))

    def loss_and_grads(self, model: Any, guide: Any, *args: Any, **kwargs: Any) -> float:
        if self.free_bits <= 0:
            with self._scaled():
                return self.inner.loss_and_grads(model, guide, *args, **kwargs)
        loss = self.differentiable_loss(model, guide, *args, **kwargs)
        loss.backward(retain_graph=self.retain_graph)
        return loss.item()


def _number(name: str, value: Any, minimum: float = 0.0) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{name} must be a finite number, got {value!r}")
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum:g}, got {value!r}")
    return float(value)


def _check_plate_options(options: Mapping[str, Any]) -> None:
    """Pyro's plate bookkeeping options, where an objective takes them: every model here has its data
    plate, so at least one plate dimension; a data plate has a name."""
    nest = options.get("max_plate_nesting", 1)
    if isinstance(nest, bool) or not isinstance(nest, int) or not 1 <= nest <= 32:
        raise ConfigError(
            f"the objective option max_plate_nesting must be a whole number in 1..32 (the plates "
            f"nested in the model, the data plate included), got {nest!r}"
        )
    plate = options.get("data_plate", DATA_PLATE)
    if not isinstance(plate, str) or not plate.strip():
        raise ConfigError(
            f"the objective option data_plate must name the model's plate over data points, got "
            f"{plate!r}"
        )


def build_objective(
    name: str,
    num_particles: int = 1,
    *,
    beta: float = 1.0,
    kl_anneal: int = 0,
    kl_anneal_start: float | None = None,
    free_bits: float = 0.0,
    **options: Any,
) -> ELBO:
    """The registered objective ``name``, with KL weighting when any of its options is set.

    ``beta``, ``kl_anneal`` (epochs), ``kl_anneal_start`` (the weight at epoch 0, default 0) and
    ``free_bits`` (nats per latent dimension) apply to every objective; all other ``options`` go to
    the objective's factory (e.g. ``alpha`` for ``renyi``).
    """
    _check_plate_options(options)
    inner = OBJECTIVES.build(name, num_particles=num_particles, **options)
    beta = _number("--beta", beta)
    free_bits = _number("--free-bits", free_bits)
    if isinstance(kl_anneal, bool) or not isinstance(kl_anneal, int) or kl_anneal < 0:
        if not (isinstance(kl_anneal, float) and kl_anneal.is_integer() and kl_anneal >= 0):
            raise ConfigError(
                f"--kl-anneal must be a whole number of epochs >= 0, got {kl_anneal!r}"
            )
        kl_anneal = int(kl_anneal)
    if kl_anneal_start is not None and kl_anneal == 0:
        raise ConfigError("--kl-anneal-start needs --kl-anneal EPOCHS, the length of the warm-up")
    start = _number("--kl-anneal-start", 0.0 if kl_anneal_start is None else kl_anneal_start)
    if beta == 1.0 and kl_anneal == 0 and free_bits == 0.0:
        return inner
    data_plate = options.get("data_plate", DATA_PLATE)
    return KLWeighted(inner, beta, kl_anneal, start, free_bits, data_plate)


def objective_options(t: TrainConfig) -> dict[str, Any]:
    """Refuse objective and KL-weighting settings no run can use; return ``t.objective_options``
    typed from the objective's signature."""
    if t.particles < 1:
        raise ConfigError(f"--particles must be a positive integer, got {t.particles!r}")
    if t.particles > 10**5:
        raise ConfigError(f"--particles {t.particles} is larger than pyro-vae allows ({10**5})")
    for name, value in (("--beta", t.beta), ("--free-bits", t.free_bits)):
        if value < 0:
            raise ConfigError(f"{name} must be at least 0, got {value!r}")
    if t.kl_anneal < 0:
        raise ConfigError(f"--kl-anneal must be a whole number of epochs >= 0, got {t.kl_anneal}")
    if t.kl_anneal_start is not None:
        if t.kl_anneal == 0:
            raise ConfigError(
                "--kl-anneal-start needs --kl-anneal EPOCHS, the length of the warm-up"
            )
        if t.kl_anneal_start < 0:
            raise ConfigError(f"--kl-anneal-start must be at least 0, got {t.kl_anneal_start}")
    for key in t.objective_options:
        if key in KL_OPTIONS:
            flag = "--" + key.replace("_", "-")
            raise ConfigError(
                f"{key} is a training option of its own ({flag}), not an objective option"
            )
    options = OBJECTIVES.options(t.objective, t.objective_options)
    _check_plate_options(options)
    return options


def objective_for(train: TrainConfig) -> ELBO:
    """The objective a training configuration names, with its particles, options and KL weighting."""
    return build_objective(
        train.objective,
        train.particles,
        beta=train.beta,
        kl_anneal=train.kl_anneal,
        kl_anneal_start=train.kl_anneal_start,
        free_bits=train.free_bits,
        **train.objective_options,
    )
