"""The semi-supervised model M2 of Kingma, Mohamed, Rezende and Welling (2014)."""

from __future__ import annotations

import copy
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro import poutine
from pyro.distributions import TorchDistribution
from pyro.infer import Trace_ELBO, TraceEnum_ELBO
from torch import nn

from ..errors import ConfigError, DataError
from ..plan import Feed, Plan, make_svi, num_batches, world_size
from .base import MODELS, part_options
from .cvae import CVAE, check_labels, snapshot

if TYPE_CHECKING:
    from pyro.infer import ELBO
    from pyro.optim import PyroOptim

    from ..config import ModelConfig, RunConfig
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
        val_size: int | None = None,
        aux_weight: float | None = None,
        labelled_every: int = 1,
        name: str | None = None,
        **kw: Any,
    ) -> None:
        """``labels``: training images that keep their label (class-balanced, chosen by the run's
        seed; at least one per class); ``val_size``: validation images held out of the unlabelled
        data (default :func:`default_val_size`); ``aux_weight``: alpha of the classification loss
        per labelled image and step (default :data:`DEFAULT_AUX_WEIGHT`); ``labelled_every``: a
        labelled batch after every k unlabelled ones (0: one labelled pass an epoch). These
        describe the training plan (:class:`SemiSupervisedPlan`); the model's parts are
        :class:`~pyro_vae.models.CVAE`'s keywords."""
        for what, value, low in (
            ("--labels", labels, 0),
            ("--val-size", 0 if val_size is None else val_size, 0),
            ("--labelled-every", labelled_every, 0),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(f"{what} must be a whole number >= {low}, got {value!r}")
        if aux_weight is not None and not aux_weight >= 0:
            raise ConfigError(f"--aux-weight must be non-negative, got {aux_weight!r}")
        super().__init__(x_shape, num_classes, name=name, **kw)
        self.num_labelled, self.val_size = labels, val_size
        self.aux_weight, self.labelled_every = aux_weight, labelled_every
        self.classifier = build_classifier(
            self.x_shape,
            self.num_classes,
            kw.get("network", "mlp"),
            kw.get("hidden", (400,)),
            kw.get("activation", "relu"),
            kw.get("network_options"),
        )

    @classmethod
    def from_config(
        cls, config: ModelConfig, x_shape: Sequence[int], num_classes: int | None
    ) -> M2:
        return cls(
            x_shape,
            num_classes,
            latent_dim=config.latent_dim,
            **part_options(config),
            **config.model_options,
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

    # -- training ---------------------------------------------------------------------------------
    def training_plan(
        self, data: Dataset, config: RunConfig, optim: PyroOptim, objective: ELBO
    ) -> SemiSupervisedPlan:
        what = f"--model {config.model.model}"
        labels = check_labels(data.train_labels, self.num_classes, what)
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


def split_labels(
    labels: torch.Tensor, num_labelled: int, num_val: int, num_classes: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Indices (labelled, validation, unlabelled) of the training set, chosen by ``seed``.

    The labelled subset is class-balanced: ``num_labelled // K`` images of each class, the remainder
    given to randomly chosen classes. The validation images come from the rest and are held out of
    training; their labels serve only to pick the reported epoch.
    """
    n = labels.shape[0]
    if num_labelled < num_classes:
        raise ConfigError(
            f"--labels {num_labelled} leaves some of the {num_classes} classes without a labelled "
            f"image; pass --labels {num_classes} or more"
        )
    if num_labelled + num_val >= n:
        raise ConfigError(
            f"--labels {num_labelled} plus {num_val} validation images leave no unlabelled data in "
            f"the {n} training images; use fewer labels or --val-size"
        )
    g = torch.Generator().manual_seed(seed)
    labels = labels.cpu()
    per_class = torch.full((num_classes,), num_labelled // num_classes)
    per_class[torch.randperm(num_classes, generator=g)[: num_labelled % num_classes]] += 1
    chosen = []
    for k in range(num_classes):
        members = (labels == k).nonzero().squeeze(-1)
        if members.numel() < per_class[k]:
            raise DataError(
                f"class {k} has only {members.numel()} training images, fewer than the "
                f"{int(per_class[k])} a class-balanced --labels {num_labelled} needs"
            )
        chosen.append(members[torch.randperm(members.numel(), generator=g)[: per_class[k]]])
    labelled = torch.cat(chosen)
    labelled = labelled[torch.randperm(labelled.numel(), generator=g)]
    rest = torch.ones(n, dtype=torch.bool)
    rest[labelled] = False
    rest = rest.nonzero().squeeze(-1)
    rest = rest[torch.randperm(rest.numel(), generator=g)]
    return labelled, rest[:num_val].sort().values, rest[num_val:].sort().values


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

    After every epoch the validation accuracy of q(y|x) is measured; the weights of the best epoch
    so far are kept, saved with the checkpoint, and loaded into the model when training ends.
    """

    def __init__(
        self, model: M2, data: Dataset, labels: torch.Tensor, config: RunConfig, optim: PyroOptim
    ) -> None:
        t = config.train
        self.model = model
        if model.num_labelled < 1:
            raise ConfigError(
                "--model m2 is semi-supervised: pass --labels N, how many training images keep their "
                "labels (class-balanced, chosen by --seed)"
            )
        n = labels.shape[0]
        num_val = default_val_size(n) if model.val_size is None else model.val_size
        lab, val, unl = split_labels(labels, model.num_labelled, num_val, model.num_classes, t.seed)
        device = data.device
        self.labelled = lab.to(device)
        self.val = val.to(device)
        self.unlabelled = unl.to(device)
        self.labels = labels.to(device)
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
        out: dict[str, float] = {"train_aux_loss": self._aux_total / max(1, self._aux_n)}
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
        }
        if self.best_state is not None:
            state["selected_model"] = self.best_state
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.best_epoch = int(state.get("best_epoch", 0))
        self.best_val_accuracy = float(state.get("best_val_accuracy", -1.0))
        self.epochs_done = int(state.get("epochs_done", 0))
        self.best_state = state.get("selected_model")

    def finish(self) -> None:
        """Leave the model at the epoch the validation set picked."""
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
