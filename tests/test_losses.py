from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from dermai.losses import joint_loss, nt_xent, nt_xent_global


def reference_nt_xent(z_a: torch.Tensor, z_b: torch.Tensor, tau: float, ids: list[int] | None = None) -> torch.Tensor:
    """Loop-by-loop NT-Xent straight from the SimCLR paper's definition; with `ids`, views of another copy of
    the same image are left out of the denominator."""
    z = F.normalize(torch.cat([z_a, z_b]).double(), dim=1)
    n2 = z.shape[0]
    n = n2 // 2
    image = [*(ids or range(n)), *(ids or range(n))]
    total = 0.0
    for i in range(n2):
        j = (i + n) % n2
        sims = [(z[i] @ z[k]) / tau for k in range(n2) if k != i and (k == j or image[k] != image[i])]
        total += -((z[i] @ z[j]) / tau - torch.logsumexp(torch.stack(sims), 0))
    return total / n2


@pytest.mark.parametrize("tau", [0.1, 0.5, 1.0])
def test_matches_reference(tau: float) -> None:
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(6, 8, generator=g), torch.randn(6, 8, generator=g)
    assert torch.allclose(nt_xent(a, b, tau).double(), reference_nt_xent(a, b, tau), atol=1e-5)


def test_identical_views_orthogonal_samples_known_value() -> None:
    # N orthonormal vectors, each view identical: positive sim 1/τ, the 2N−2 negatives 0.
    n, tau = 4, 0.5
    z = torch.eye(n)
    expected = -math.log(math.exp(1 / tau) / (math.exp(1 / tau) + (2 * n - 2)))
    assert nt_xent(z, z.clone(), tau).item() == pytest.approx(expected, rel=1e-5)


def test_pairing_matters_and_permutation_invariance() -> None:
    g = torch.Generator().manual_seed(1)
    a = torch.randn(8, 16, generator=g)
    b = a + 0.05 * torch.randn(8, 16, generator=g)
    aligned = nt_xent(a, b)
    perm = torch.randperm(8, generator=g)
    assert nt_xent(a[perm], b[perm]).item() == pytest.approx(aligned.item(), rel=1e-5)  # same pairs, reordered
    assert nt_xent(a, b[perm]).item() > aligned.item() + 0.5  # broken pairs: much higher loss


def test_float32_under_bf16_autocast_and_gradients_flow() -> None:
    a = torch.randn(4, 8, requires_grad=True)
    b = torch.randn(4, 8, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = nt_xent(a.bfloat16(), b.bfloat16())
    assert loss.dtype == torch.float32
    loss.backward()
    assert a.grad is not None and a.grad.abs().sum() > 0 and b.grad.abs().sum() > 0


def test_global_variant_equals_full_batch_when_averaged_over_ranks() -> None:
    g = torch.Generator().manual_seed(2)
    a, b = torch.randn(8, 5, generator=g), torch.randn(8, 5, generator=g)
    full = nt_xent(a, b, 0.5)
    parts = [nt_xent_global(a[r * 4 : (r + 1) * 4], b[r * 4 : (r + 1) * 4], a, b, r * 4, 0.5) for r in range(2)]
    assert torch.stack(parts).mean().item() == pytest.approx(full.item(), rel=1e-5)


def test_copies_of_one_image_are_not_each_others_negatives() -> None:
    """Balanced fine-tuning batches draw with replacement: rows 0, 3 and 5 below are one image."""
    g = torch.Generator().manual_seed(3)
    a, b = torch.randn(6, 8, generator=g), torch.randn(6, 8, generator=g)
    ids = [7, 1, 2, 7, 4, 7]
    loss = nt_xent(a, b, 0.5, ids=torch.tensor(ids))
    assert loss.double().item() == pytest.approx(reference_nt_xent(a, b, 0.5, ids).item(), rel=1e-5)
    assert loss.item() != pytest.approx(nt_xent(a, b, 0.5).item(), rel=1e-3)  # the copies did count before
    distinct = torch.arange(6)
    assert nt_xent(a, b, 0.5, ids=distinct).item() == pytest.approx(nt_xent(a, b, 0.5).item(), rel=1e-6)
    # Two copies with identical projections: without ids each is the other's hardest negative.
    same = torch.eye(4)
    same[1] = same[0]
    dup = torch.tensor([0, 0, 2, 3])
    assert nt_xent(same, same.clone(), 0.5, ids=dup).item() < nt_xent(same, same.clone(), 0.5).item() - 0.1
    halves = [
        nt_xent_global(
            a[r * 3 : (r + 1) * 3],
            b[r * 3 : (r + 1) * 3],
            a,
            b,
            r * 3,
            0.5,
            torch.tensor(ids[r * 3 : (r + 1) * 3]),
            torch.tensor(ids),
        )
        for r in range(2)
    ]
    assert torch.stack(halves).mean().item() == pytest.approx(loss.item(), rel=1e-5)  # copies on two ranks too


def test_joint_loss_adds_lambda_times_ntxent() -> None:
    logits = torch.randn(4, 7)
    labels = torch.tensor([0, 1, 2, 3])
    total, ce = joint_loss(logits, logits, labels, torch.tensor(2.0), lambda_ntxent=0.5)
    assert ce.item() == pytest.approx(F.cross_entropy(logits, labels).item(), rel=1e-5)
    assert total.item() == pytest.approx(ce.item() + 1.0, rel=1e-5)


def test_rejects_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match="two"):
        nt_xent(torch.randn(3, 4), torch.randn(4, 4))
