"""The semi-supervised model M2 of Kingma, Mohamed, Rezende and Welling (2014)."""

from __future__ import annotations

import copy
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro import poutine
from pyro.distributions import TorchDistribution
from pyro.infer import Trace_ELBO, TraceEnum_ELBO
from torch import nn

from ..errors import CheckpointError, ConfigError, DataError
from ..plan import Feed, Plan, make_svi, num_batches, world_size
from .base import MODELS
from .cvae import CVAE, check_labels, snapshot

if TYPE_CHECKING:
    from pyro.infer import ELBO
    from pyro.optim import PyroOptim

    from ..config import RunConfig
    from ..data import Dataset


class M2(CVAE):
    r"""M2 (Kingma et al. 2014): a label-conditioned VAE whose label is latent when not observed.

    Generative process (``model``), for each datum ``x_n`` in the plate ``data``::

        z_n ~ p(z)                                # prior, default N(0, I)
        y_n ~ Cat(1/K, ..., 1/K)                  # observed for labelled data
        x_n ~ p(x | decoder([z_n, onehot(y_n)]))   # likelihood, default Bernoulli

    Inference (``guide``)::

        y_n ~ Cat(softmax(classifier(x_n)))       # q(y|x), only for unlabelled data
        z_n ~ q(z | join([encoder(x_n), onehot(y_n)]))

    Labelled data give the bound L(x, y) on log p(x, y) (eq. 6); for unlabelled data ``y`` is summed
    out exactly by parallel enumeration under ``TraceEnum_ELBO``:

    .. math:: U(x) = \sum_y q(y|x)\,L(x, y) + \mathcal{H}(q(y|x))        \quad\text{(eq. 7)}

    and the classifier also learns from the labels directly through ``model_classify``/
    ``guide_classify``, the auxiliary term of eq. 9 (scaled by alpha by the training plan):

    .. math:: \mathcal{J}^\alpha = \sum_{(x,y)} L(x,y) + \sum_x U(x)
              + \alpha\,\mathbb{E}_{\tilde p_l(x,y)}[-\log q(y|x)].

    The classifier has the encoder's architecture (``network``/``hidden``) with its own weights and a
    linear layer to the K logits. Guides, priors, likelihoods and networks are the VAE's registries.
    """

    #: trained with its own bound (labels summed out by TraceEnum_ELBO), the ELBO of eq. 6 and 7
    objectives = frozenset({"elbo"})
    partial_steps = True  # the classification step uses q(y|x) alone
    options = frozenset()

    def __init__(
        self,
        x_shape: Sequence[int],
        num_classes: int,
        *,
        labels: int = 0,
        val_labels: int = 0,
        patience: int = 0,
        val_size: int | None = 0,
        aux_weight: float | None = None,
        labelled_every: int = 1,
        name: str | None = None,
        **kw: Any,
    ) -> None:
        """``labels``: training images that keep their label (class-balanced, chosen by the run's
        seed; at least one per class; 0 with data whose -1 labels mark the unlabelled rows);
        ``val_labels``: of those, the ones held out of training to pick the reported epoch (0: the
        last epoch is reported); ``patience``: stop once the validation accuracy has not improved
        for that many epochs (0: never); ``val_size``: validation images beyond the label budget,
        counted in the labels used (None, in a run of an earlier pyro-vae: :func:`default_val_size`);
        ``aux_weight``: alpha of the classification loss
        per labelled image and step (default :data:`DEFAULT_AUX_WEIGHT`); ``labelled_every``: a
        labelled batch after every k unlabelled ones (0: one labelled pass an epoch). These
        describe the training plan (:class:`SemiSupervisedPlan`); the model's parts are
        :class:`~pyro_vae.models.CVAE`'s keywords."""
        for what, value, low in (
            ("--labels", labels, 0),
            ("--val-labels", val_labels, 0),
            ("--patience", patience, 0),
            ("--val-size", 0 if val_size is None else val_size, 0),
            ("--labelled-every", labelled_every, 0),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(f"{what} must be a whole number >= {low}, got {value!r}")
        if aux_weight is not None and not aux_weight >= 0:
            raise ConfigError(f"--aux-weight must be non-negative, got {aux_weight!r}")
        super().__init__(x_shape, num_classes, name=name, **kw)
        self.num_labelled, self.val_size = labels, val_size
        self.val_labels, self.patience = val_labels, patience
        self.aux_weight, self.labelled_every = aux_weight, labelled_every
        self.classifier = build_classifier(
            self.x_shape,
            self.num_classes,
            kw.get("network", "mlp"),
            kw.get("hidden", (400,)),
            kw.get("activation", "relu"),
            kw.get("network_options"),
        )

    # -- Pyro -------------------------------------------------------------------------------------
    def label_guide(self, x: torch.Tensor) -> TorchDistribution:
        """q(y|x), the classifier."""
        return dist.Categorical(logits=self.classifier(x), validate_args=False)

    def _guide_parts(self, labelled: bool) -> tuple[str, ...]:
        return ("encoder", "join", "q") if labelled else ("encoder", "join", "q", "classifier")

    def model_classify(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """The auxiliary term -log q(y|x) on labelled data, written as an observed site (Pyro's SS-VAE
        tutorial); scale it by alpha with ``poutine.scale``."""
        self._register("classifier")
        with pyro.plate("data", x.shape[0]):
            pyro.sample("y_aux", self.label_guide(x), obs=y)

    def guide_classify(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """Nothing is latent in ``model_classify``."""

    # -- classification ---------------------------------------------------------------------------
    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """argmax_y q(y|x)."""
        return self.classifier(x).argmax(-1)

    @torch.no_grad()
    def accuracy(self, x: torch.Tensor, y: torch.Tensor, batch_size: int = 4096) -> float:
        was_training = self.training
        self.eval()
        try:
            right = sum(
                int((self.predict(xb) == yb).sum())
                for xb, yb in zip(x.split(batch_size), y.split(batch_size))
            )
        finally:
            self.train(was_training)
        return right / max(1, x.shape[0])

    def evaluate_extra(self, x: torch.Tensor, labels: torch.Tensor | None) -> dict[str, float]:
        if labels is None:
            return {}
        return {"test_accuracy": self.accuracy(x, labels), **super().evaluate_extra(x, labels)}

    def run_summary(
        self, config: RunConfig, plan_state: Mapping[str, Any], dataset: Dataset
    ) -> dict[str, Any]:
        """The labels the run used (training + validation) and what picked its epoch; a run of an
        earlier pyro-vae, which selected with validation labels beyond its budget, says so."""
        if "labels_used" in plan_state:
            out = {k: int(plan_state[k]) for k in LABEL_COUNTS}
        else:  # before labels were counted: --val-size beyond the budget, by default 10%, <= 5000
            n = dataset.train.shape[0]
            extra = default_val_size(n) if self.val_size is None else self.val_size
            out = {
                "labels_used": self.num_labelled + extra,
                "train_labels": self.num_labelled,
                "val_labels": 0,
                "extra_val_labels": extra,
            }
        val = out["val_labels"] + out["extra_val_labels"]
        out["selected_by"] = f"validation accuracy on {val} labels" if val else "last epoch"
        if out["extra_val_labels"]:
            out["note"] = (
                f"the reported epoch was selected with {out['extra_val_labels']} validation labels "
                f"beyond the {out['train_labels'] + out['val_labels']}-label budget: "
                f"{out['labels_used']} labels used in all"
            )
        return out

    # -- training ---------------------------------------------------------------------------------
    def training_plan(
        self, data: Dataset, config: RunConfig, optim: PyroOptim, objective: ELBO
    ) -> SemiSupervisedPlan:
        what = f"--model {config.model.model}"
        labels = check_labels(data.train_labels, self.num_classes, what, unlabelled=True)
        return self.make_plan(data, labels, config, optim, objective)

    def make_plan(
        self,
        data: Dataset,
        labels: torch.Tensor,
        config: RunConfig,
        optim: PyroOptim,
        objective: ELBO,
    ) -> SemiSupervisedPlan:
        """The training plan, once :meth:`training_plan` has checked the configuration."""
        return SemiSupervisedPlan(self, data, labels, config, optim)


def build_classifier(
    x_shape: Sequence[int],
    num_classes: int,
    network: str,
    hidden: Sequence[int],
    act: str,
    network_options: Mapping[str, Any] | None = None,
) -> nn.Sequential:
    """q(y|x)'s network: the encoder architecture, then a linear layer to the class logits."""
    from ..nn import NETWORKS

    body = NETWORKS.build(network, **(network_options or {})).encoder(x_shape, hidden, act)
    return nn.Sequential(body, nn.Linear(body.feature_dim, num_classes))


#: how a semi-supervised run's labels were spent (:meth:`LabelSplit.counts`)
LABEL_COUNTS = ("labels_used", "train_labels", "val_labels", "extra_val_labels")


class LabelSplit(NamedTuple):
    """The training rows of a semi-supervised run, by what their labels are used for.

    ``budget`` holds every row whose label the run may read: ``labelled`` (trained on) and the first
    ``len(budget) - len(labelled)`` rows of ``val`` (``--val-labels``, model selection). Rows of
    ``val`` beyond those are ``extra`` (``--val-size``: validation labels beyond the budget).
    ``unlabelled`` rows are trained on without their labels.
    """

    labelled: torch.Tensor
    val: torch.Tensor
    unlabelled: torch.Tensor
    budget: torch.Tensor
    extra: torch.Tensor

    @property
    def labels_used(self) -> int:
        """Every label the run reads: training, validation from the budget, and beyond it."""
        return self.budget.numel() + self.extra.numel()

    def counts(self) -> dict[str, int]:
        return {
            "labels_used": self.labels_used,
            "train_labels": self.labelled.numel(),
            "val_labels": self.budget.numel() - self.labelled.numel(),
            "extra_val_labels": self.extra.numel(),
        }


def _round_robin(rows: torch.Tensor, labels: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """``rows`` shuffled, then ordered so that every prefix is as class-balanced as possible
    (the first row of each class, then the second of each, ...)."""
    rows = rows[torch.randperm(rows.numel(), generator=g)]
    y = labels[rows]
    rank = torch.zeros_like(y)
    for k in y.unique():
        members = (y == k).nonzero().squeeze(-1)
        rank[members] = torch.arange(members.numel())
    return rows[torch.argsort(rank, stable=True)]


def draw_budget(
    labels: torch.Tensor, num_labels: int, num_classes: int, g: torch.Generator
) -> torch.Tensor:
    """``num_labels`` rows of a fully labelled training set, class-balanced: ``num_labels // K`` of
    each class, the remainder given to randomly chosen classes.

    This stands for the person who labels the budget: it is the one place that looks at the labels
    of rows outside the budget, to draw a balanced subset of them.
    """
    per_class = torch.full((num_classes,), num_labels // num_classes)
    per_class[torch.randperm(num_classes, generator=g)[: num_labels % num_classes]] += 1
    chosen = []
    for k in range(num_classes):
        members = (labels == k).nonzero().squeeze(-1)
        if members.numel() < per_class[k]:
            raise DataError(
                f"class {k} has only {members.numel()} training images, fewer than the "
                f"{int(per_class[k])} a class-balanced --labels {num_labels} needs"
            )
        chosen.append(members[torch.randperm(members.numel(), generator=g)[: per_class[k]]])
    return torch.cat(chosen)


def split_labels(
    labels: torch.Tensor,
    num_classes: int,
    seed: int,
    *,
    budget: int = 0,
    val_labels: int = 0,
    extra_val: int = 0,
) -> LabelSplit:
    """Which training rows a semi-supervised run trains on with and without their labels, and
    which pick the reported epoch, chosen by ``seed``.

    A training set whose labels include :data:`~pyro_vae.data.UNLABELLED` (-1) brings its own split:
    its labelled rows are the budget, and ``budget`` (``--labels``) is refused. A fully labelled one
    has ``budget`` rows drawn class-balanced (:func:`draw_budget`) and the rest treated as
    unlabelled. ``val_labels`` of the budget's rows (as class-balanced as the budget allows) are held
    out of training to select the epoch; ``extra_val`` rows beyond the budget (the old protocol,
    counted in :attr:`LabelSplit.labels_used`) are held out and selected with too.
    """
    from ..data import UNLABELLED

    labels = labels.cpu()
    n = labels.shape[0]
    g = torch.Generator().manual_seed(seed)
    own = bool((labels == UNLABELLED).any())
    if own:
        known = (labels != UNLABELLED).nonzero().squeeze(-1)
        if budget:
            raise ConfigError(
                f"--labels {budget} draws a labelled subset of a fully labelled training set, but "
                f"this one marks its own unlabelled rows (-1): its {known.numel()} labelled rows "
                "are the labels; drop --labels"
            )
        if extra_val:
            raise ConfigError(
                f"--val-size {extra_val} takes validation labels beyond the labelled rows, and this "
                "training set has none (its other rows are -1); use --val-labels M to take M of its "
                f"{known.numel()} labelled rows"
            )
        if known.numel() == 0:
            raise DataError(
                "every training label is -1 (unlabelled); a semi-supervised model needs some "
                "labelled rows"
            )
        chosen = known
        rest = (labels == UNLABELLED).nonzero().squeeze(-1)
        what = f"the {known.numel()} labelled rows"
    else:
        if budget < 1:
            raise ConfigError(
                "this model is semi-supervised: pass --labels N, how many training images keep "
                "their labels (class-balanced, chosen by --seed), or mark the unlabelled rows of "
                "the data with the label -1"
            )
        if budget < num_classes:
            raise ConfigError(
                f"--labels {budget} leaves some of the {num_classes} classes without a labelled "
                f"image; pass --labels {num_classes} or more"
            )
        if budget + extra_val >= n:
            raise ConfigError(
                f"--labels {budget} plus --val-size {extra_val} leave no unlabelled data in the "
                f"{n} training images; use fewer labels or a smaller --val-size"
            )
        chosen = draw_budget(labels, budget, num_classes, g)
        mask = torch.ones(n, dtype=torch.bool)
        mask[chosen] = False
        rest = mask.nonzero().squeeze(-1)
        what = f"--labels {budget}"
    if val_labels >= chosen.numel():
        raise ConfigError(
            f"--val-labels {val_labels} leaves none of {what} to train on; take fewer for "
            "validation"
        )
    chosen = _round_robin(chosen, labels, g)
    rest = rest[torch.randperm(rest.numel(), generator=g)]
    extra = rest[:extra_val].sort().values
    labelled = chosen[val_labels:]
    labelled = labelled[torch.randperm(labelled.numel(), generator=g)]
    return LabelSplit(
        labelled=labelled,
        val=torch.cat([chosen[:val_labels].sort().values, extra]),
        unlabelled=rest[extra_val:].sort().values,
        budget=chosen,
        extra=extra,
    )


#: alpha of the auxiliary loss per labelled image and step (Pyro's SS-VAE tutorial: 46)
DEFAULT_AUX_WEIGHT = 50.0


def default_val_size(n: int) -> int:
    """Validation images when ``--val-size`` is not given: 10% of the training set, at most 5000."""
    return min(5000, n // 10)


class SemiSupervisedPlan(Plan):
    """M2's epoch: every unlabelled batch once, with labelled batches interleaved among them.

    Each labelled batch takes one step on its bound L(x, y) and one on alpha times -log q(y|x)
    (two SVI objects on one optimiser, as in Pyro's SS-VAE tutorial); each unlabelled batch one step
    on U(x), labels enumerated. With ``labelled_every = 0`` the labelled set is passed over once per
    epoch, its batches spread evenly among the unlabelled ones (the tutorial's schedule); with
    ``labelled_every = k`` a labelled batch follows every k unlabelled ones, cycling through the
    (reshuffled) labelled set as often as that takes.

    ``aux_weight`` is alpha per labelled image and step, by default :data:`DEFAULT_AUX_WEIGHT`.
    (Kingma et al.'s ``alpha = 0.1 N`` weighs the mean over the labelled set once per pass over the
    data, i.e. ``0.1 N / (num_labelled * labelled passes per epoch)`` per image and step here: about
    0.14 for 100 labels with a labelled batch after every unlabelled one, which in short CPU runs on
    MNIST gave a lower accuracy than 50. Pyro's SS-VAE tutorial uses 46.)

    The epoch's ``train_elbo`` averages the labelled bounds (on log p(x, y)) and the unlabelled ones
    (on log p(x)) over all steps; ``train_aux_loss`` is alpha times -log q(y|x) per labelled image.

    Every label counts (Oliver et al. 2018): the rows come from :func:`split_labels`, and the plan
    keeps only the labels of the budget (and of ``--val-size``'s rows beyond it); every other row's
    label is -1 here. By default no label picks the reported model: it is the last epoch's. With
    ``--val-labels M`` (M of the budget's labels, held out of training), or ``--val-size`` (labels
    beyond the budget), the validation accuracy of q(y|x) is measured after every epoch and the
    weights of the best epoch so far are kept, saved with the checkpoint, and loaded into the model
    when training ends; with ``--patience N`` training stops once N epochs in a row have not
    improved it. Every epoch's record, and the plan's state, carry ``labels_used``.
    """

    def __init__(
        self, model: M2, data: Dataset, labels: torch.Tensor, config: RunConfig, optim: PyroOptim
    ) -> None:
        t = config.train
        self.model = model
        n = labels.shape[0]
        # None: a run of an earlier pyro-vae (10% of the training set, at most 5000)
        extra = default_val_size(n) if model.val_size is None else model.val_size
        self.split = split = split_labels(
            labels,
            model.num_classes,
            t.seed,
            budget=model.num_labelled,
            val_labels=model.val_labels,
            extra_val=extra,
        )
        device = data.device
        self.labelled = split.labelled.to(device)
        self.val = split.val.to(device)
        self.unlabelled = split.unlabelled.to(device)
        # the labels this run may read, and no others: every other row is -1 here
        used = torch.cat([split.budget, split.extra]).to(labels.device)
        self.labels = torch.full_like(labels, -1)
        self.labels[used] = labels[used]
        self.labels = self.labels.to(device)
        self.val_x = data.rows(self.val)  # the un-redrawn images: validation is a fixed set
        self.val_y = self.labels[self.val]
        self.batch_size = b = t.batch_size
        world = world_size(config)
        # each process's share of the labelled set in one batch at most
        self.sup_batch = min(b, -(-self.labelled.numel() // world))
        self.num_unsup = num_batches(self.unlabelled.numel(), b, world)
        if model.labelled_every == 0:
            self.num_sup = num_batches(self.labelled.numel(), self.sup_batch, world)
        else:
            self.num_sup = max(1, self.num_unsup // model.labelled_every)
        self.steps_per_epoch = self.num_unsup + self.num_sup
        self.aux_weight = DEFAULT_AUX_WEIGHT if model.aux_weight is None else model.aux_weight
        if self.aux_weight < 0:
            raise ConfigError(f"--aux-weight must be non-negative, got {self.aux_weight}")
        particles = dict(
            num_particles=t.particles, vectorize_particles=t.particles > 1, max_plate_nesting=1
        )
        self.svi_unsup = make_svi(
            model.model, model.guide, optim, TraceEnum_ELBO(**particles), config
        )
        self.svi_sup = make_svi(model.model, model.guide, optim, Trace_ELBO(**particles), config)
        self.svi_aux = make_svi(
            poutine.scale(model.model_classify, scale=self.aux_weight),
            model.guide_classify,
            optim,
            Trace_ELBO(max_plate_nesting=1),
            config,
        )
        self.best_epoch, self.best_val_accuracy, self.best_state = 0, -1.0, None
        self.epochs_done, self._aux_total, self._aux_n = 0, 0.0, 0
        self.counts = split.counts()
        self.patience = model.patience
        if self.patience and not self.val.numel():
            raise ConfigError(
                f"--patience {model.patience} stops on the validation accuracy, and this run has no "
                "validation labels; pass --val-labels M (M of the budget's labels)"
            )

    def _labelled_batches(self, feed: Feed) -> Iterator[torch.Tensor]:
        while True:  # reshuffle on every pass over the labelled set
            yield from feed.shuffle(self.labelled, self.sup_batch)

    def steps(self, feed: Feed) -> list[tuple[str, torch.Tensor]]:
        """The epoch's steps in order: ``("unlabelled", idx)`` and ``("labelled", idx)``."""
        unsup = feed.shuffle(self.unlabelled, self.batch_size)
        sup = self._labelled_batches(feed)
        # labelled step j goes after unlabelled step floor((j + 1) * U / S) - 1: evenly interleaved
        after = Counter(
            max(0, ((j + 1) * self.num_unsup) // self.num_sup - 1) for j in range(self.num_sup)
        )
        out = []
        for i, idx in enumerate(unsup):
            out.append(("unlabelled", idx))
            out.extend(("labelled", next(sup)) for _ in range(after.get(i, 0)))
        return out

    def epoch(self, feed: Feed) -> Iterator[tuple[float, int]]:
        steps = self.steps(feed)
        self._aux_total, self._aux_n = 0.0, 0
        for (kind, idx), xb in zip(steps, feed([idx for _, idx in steps])):
            if kind == "unlabelled":
                yield self.svi_unsup.step(xb), idx.shape[0]
                continue
            yb = self.labels[idx]
            self._aux_total += self.svi_aux.step(xb, yb)
            self._aux_n += idx.shape[0]
            yield self.svi_sup.step(xb, yb), idx.shape[0]

    def end_epoch(self, data: Dataset) -> dict[str, float]:
        self.epochs_done += 1
        out: dict[str, float] = {
            "train_aux_loss": self._aux_total / max(1, self._aux_n),
            "labels_used": self.counts["labels_used"],
        }
        if self.val.numel():
            out["val_accuracy"] = val = self.model.accuracy(self.val_x, self.val_y)
            if val > self.best_val_accuracy:
                self.best_epoch, self.best_val_accuracy = self.epochs_done, val
                self.best_state = snapshot(self.model)
            out["best_epoch"] = self.best_epoch
        if data.test_labels is not None:
            out["test_accuracy"] = self.model.accuracy(data.test, data.test_labels)
        return out

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {
            "best_epoch": self.best_epoch,
            "best_val_accuracy": self.best_val_accuracy,
            "epochs_done": self.epochs_done,
            **self.counts,
        }
        if self.best_state is not None:
            state["selected_model"] = self.best_state
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if state and "labels_used" not in state:
            raise CheckpointError(
                "this run was trained by an earlier pyro-vae, which split the labels differently "
                "(and selected with validation labels beyond its budget); evaluate it, and start "
                "a new run to train further"
            )
        self.best_epoch = int(state.get("best_epoch", 0))
        self.best_val_accuracy = float(state.get("best_val_accuracy", -1.0))
        self.epochs_done = int(state.get("epochs_done", 0))
        self.best_state = state.get("selected_model")

    def done(self) -> bool:
        """Early stopping: ``patience`` epochs without a better validation accuracy (counted from
        the first epoch that measured it)."""
        return bool(self.patience) and (
            self.best_epoch > 0 and self.epochs_done - self.best_epoch >= self.patience
        )

    def finish(self) -> None:
        """Leave the model at the epoch the validation set picked (if any; else the last)."""
        if self.best_state is not None:
            self.model.load_state_dict(self.best_state)


MODELS.register("m2")(M2)


def supervised_baseline(
    model: M2,
    x: torch.Tensor,
    y: torch.Tensor,
    x_val: torch.Tensor,
    y_val: torch.Tensor,
    x_test: torch.Tensor,
    y_test: torch.Tensor,
    steps: int = 300,
    lr: float = 1e-3,
) -> float:
    """Test accuracy of q(y|x)'s architecture trained on the labelled images alone.

    The baseline the semi-supervised signal must beat: fresh weights, full-batch Adam on cross-entropy,
    and, as for M2, the step with the best validation accuracy is the one reported.
    """
    clf = copy.deepcopy(model.classifier)
    for layer in clf.modules():
        if hasattr(layer, "reset_parameters"):
            layer.reset_parameters()
    opt = torch.optim.Adam(clf.parameters(), lr=lr)
    best_val, test = -1.0, 0.0
    for _ in range(steps):
        opt.zero_grad()
        F.cross_entropy(clf(x), y).backward()
        opt.step()
        with torch.no_grad():
            val = (clf(x_val).argmax(-1) == y_val).float().mean().item()
            if val > best_val:
                best_val, test = val, (clf(x_test).argmax(-1) == y_test).float().mean().item()
    return test
