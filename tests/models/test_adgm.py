"""ADGM and SDGM (Maaløe et al. 2016): the enumerated bounds against sums written out by hand."""

from __future__ import annotations

import math

import pyro
import pytest
import torch
import torch.nn.functional as F
from pyro.infer import Trace_ELBO, TraceEnum_ELBO

from pyro_vae.models import ADGM, SDGM


def by_hand(m: ADGM, x: torch.Tensor, y: torch.Tensor | None, seed: int) -> dict:
    """The pieces of the bound with the guide's noise: a ~ q(a|x) once, then z ~ q(z|x, a, y) for
    each label (every class when ``y`` is None), and the one-sample bound on log p(x, y, a, z) minus
    log q(z|x, a, y) for each, written with torch.distributions."""
    K, N = m.num_classes, x.shape[0]
    ys = torch.arange(K).unsqueeze(-1).expand(K, N) if y is None else y.unsqueeze(0)  # (Y, N)
    Y = ys.shape[0]
    torch.manual_seed(seed)
    with torch.no_grad():
        q_a = m.q_a(m.aux_encoder(x))
        a = q_a.rsample()  # (N, A): drawn first, as the guide does
        onehot = F.one_hot(ys, K).float()  # (Y, N, K)
        a_y = a.expand(Y, N, -1)
        q_z = m.q(m.join(torch.cat([m.encoder(x).expand(Y, N, -1), a_y, onehot], -1)))
        z = q_z.rsample()  # (Y, N, D)
        if m.skip:  # p(a|z, y) p(x|a, z, y)
            p_a = m.p_a.head(m.p_a.body(torch.cat([z, onehot], -1)))
            logits = m.decoder(torch.cat([z, onehot, a_y], -1))
        else:  # p(x|z, y) p(a|x, z, y)
            logits = m.decoder(torch.cat([z, onehot], -1))
            p_a = m.p_a.head(m.p_a.body(torch.cat([m.aux_x(x).expand(Y, N, -1), z, onehot], -1)))
        log_px = torch.distributions.Bernoulli(logits=logits).log_prob(x).sum((-1, -2, -3))
        log_pz = torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1)
        return {
            "per_label": log_px + log_pz - math.log(K) + p_a.log_prob(a_y) - q_z.log_prob(z),
            "log_q_a": q_a.log_prob(a),  # (N,)
            "q_y": torch.softmax(m.classifier(x, a), -1).T,  # (K, N): q(y|a, x)
        }


@pytest.mark.parametrize("cls", [ADGM, SDGM])
def test_the_bounds_equal_the_sums_written_out_by_hand(cls) -> None:
    pyro.clear_param_store()
    K, N = 3, 5
    torch.manual_seed(0)
    m = cls((1, 2, 2), K, latent_dim=2, aux_dim=3, hidden=(6,))
    x = torch.bernoulli(torch.full((N, 1, 2, 2), 0.4))
    torch.manual_seed(7)
    unlabelled = TraceEnum_ELBO(max_plate_nesting=1).loss(m.model, m.guide, x)
    # sum_y q(y|a,x) L(x, y, a) + H(q(y|a,x)) - log q(a|x)   (Maaløe et al. 2016, eq. 7)
    p = by_hand(m, x, None, 7)
    entropy = -(p["q_y"] * p["q_y"].log()).sum(0)
    expected = -((p["q_y"] * p["per_label"]).sum(0) + entropy - p["log_q_a"]).sum()
    assert unlabelled == pytest.approx(float(expected), rel=1e-5, abs=1e-4)
    # and not just any number: one class's bound differs from the sum over classes
    assert abs(unlabelled + float((p["per_label"][0] - p["log_q_a"]).sum())) > 1e-3
    y = torch.tensor([0, 2, 1, 1, 0])
    torch.manual_seed(8)
    labelled = Trace_ELBO(max_plate_nesting=1).loss(m.model, m.guide, x, y)
    p = by_hand(m, x, y, 8)  # L(x, y) with a and z drawn from q(a|x) q(z|x, a, y)  (eq. 6)
    assert labelled == pytest.approx(float(-(p["per_label"][0] - p["log_q_a"]).sum()), rel=1e-5)


def test_prediction_is_the_classifier_at_the_mean_of_q_a() -> None:
    m = ADGM((1, 2, 2), 3, latent_dim=2, aux_dim=3, hidden=(6,))
    x = torch.rand(7, 1, 2, 2)
    a = m.q_a.mean(m.aux_encoder(x))
    assert torch.equal(m.predict(x), m.classifier(x, a).argmax(-1))
    assert m.sample(4).shape == (4, 1, 2, 2)
    assert SDGM((1, 2, 2), 3, latent_dim=2, hidden=(6,)).sample(2).shape == (2, 1, 2, 2)
