import pytest
import torch
from torch.func import functional_call

from evoproxy.stats import hutchinson, top_eigenvalue


def _exact_blocks(model, x, y):
    names = ["conv.weight", "fc.weight"]
    shapes = [dict(model.named_parameters())[n].shape for n in names]
    sizes = [s.numel() for s in shapes]
    flat0 = torch.cat([dict(model.named_parameters())[n].detach().flatten() for n in names])

    def loss(flat):
        parts = torch.split(flat, sizes)
        params = {n: p.view(s) for n, p, s in zip(names, parts, shapes)}
        return torch.nn.functional.cross_entropy(functional_call(model, params, (x,)), y)

    full = torch.autograd.functional.hessian(loss, flat0)
    offsets = [0, sizes[0], sizes[0] + sizes[1]]
    return full, [slice(a, b) for a, b in zip(offsets, offsets[1:])]


def _grads(model, x, y):
    params = [model.conv.weight, model.fc.weight]
    loss = torch.nn.functional.cross_entropy(model(x), y)
    return list(torch.autograd.grad(loss, params, create_graph=True)), params


@pytest.mark.slow
def test_hutchinson_matches_exact_hessian(tiny):
    model, x, y = tiny
    full, blocks = _exact_blocks(model, x, y)
    grads, params = _grads(model, x, y)
    n = 3000
    diags, traces, used = hutchinson(grads, params, n, 0.0, torch.Generator().manual_seed(1))
    assert used == n
    off = full - torch.diag(torch.diagonal(full))
    for rows, diag, trace, p in zip(blocks, diags, traces, params):
        exact_diag = torch.diagonal(full)[rows]
        assert diag.shape == p.shape
        # Tolerance: 4 standard errors of the estimator, from its exact variance under Rademacher v:
        # Var[vᵀ_l (Hv)_l] = 2 Σ_{i≠j in l} H_ij² + Σ_{i in l, j not in l} H_ij²; Var[v_i (Hv)_i] = Σ_{j≠i} H_ij².
        in_block = off[rows, rows].pow(2).sum()
        var_trace = 2 * in_block + full[rows].pow(2).sum() - full[rows, rows].pow(2).sum()
        assert abs(trace - exact_diag.sum().item()) <= 4 * (var_trace / n).sqrt().item()
        se_diag = (off[rows].pow(2).sum(1) / n).sqrt()
        assert ((diag.flatten() - exact_diag).abs() <= 5 * se_diag).all()
        # and, in plain terms, within 10% of the exact trace and 25% (Frobenius) of the exact diagonal here
        assert abs(trace - exact_diag.sum().item()) <= 0.10 * abs(exact_diag.sum().item())
        assert (diag.flatten() - exact_diag).norm() <= 0.25 * exact_diag.norm()


def test_hutchinson_stops_early_with_tolerance(tiny):
    model, x, y = tiny
    grads, params = _grads(model, x, y)
    _, _, used = hutchinson(grads, params, 500, 0.5, torch.Generator().manual_seed(1))
    assert 8 <= used < 500


@pytest.mark.parametrize("most, tol", [(500, 1e-10), (12, 0.0)])
def test_the_top_eigenvalue_matches_eigvalsh_within_a_dozen_hessian_products(tiny, most, tol):
    """Lanczos: HAWQ's power iteration needs many more products where the two largest eigenvalues
    of a block are close in magnitude (it is 4 % off after 12 on this model's first block)."""
    model, x, y = tiny
    full, blocks = _exact_blocks(model, x, y)
    grads, params = _grads(model, x, y)
    for rows, g, p in zip(blocks, grads, params):
        eigs = torch.linalg.eigvalsh(full[rows, rows])
        dominant = eigs[eigs.abs().argmax()].item()
        est, iters = top_eigenvalue(g, p, most, tol, torch.Generator().manual_seed(2))
        assert iters <= most and abs(est - dominant) <= 1e-3 * abs(dominant), (est, dominant, iters)


class _GatedNet(torch.nn.Module):
    """A convolution gated per channel by a Hardsigmoid, as MobileNetV3's squeeze-and-excitation
    is; `functional` calls F.hardsigmoid in the forward instead of holding the module."""

    def __init__(self, functional: bool = False):
        super().__init__()
        torch.manual_seed(0)
        self.conv, self.gate, self.fc = torch.nn.Conv2d(1, 4, 3), torch.nn.Conv2d(4, 4, 1), torch.nn.Linear(64, 3)
        self.scale = torch.nn.functional.hardsigmoid if functional else torch.nn.Hardsigmoid()

    def forward(self, x):
        h = self.conv(x)
        return self.fc((h * self.scale(self.gate(h.mean((2, 3), keepdim=True)))).flatten(1))


def _batch():
    g = torch.Generator().manual_seed(0)
    return torch.randn(8, 1, 6, 6, generator=g), torch.randint(0, 3, (8,), generator=g)


def test_hardsigmoid_gets_a_second_derivative_with_the_same_values():
    from evoproxy.stats.hessian import twice_differentiable

    x = torch.linspace(-5, 5, 1001)
    model = twice_differentiable(torch.nn.Sequential(torch.nn.Hardsigmoid()))
    assert torch.equal(model(x), torch.nn.functional.hardsigmoid(x))
    with pytest.raises(RuntimeError, match="hardsigmoid_backward"):  # why: torch's own kernel has none
        _hessian_trace(_GatedNet())
    assert torch.isfinite(torch.tensor(_hessian_trace(twice_differentiable(_GatedNet())))).all()


def _hessian_trace(model):
    x, y = _batch()
    params = [model.conv.weight, model.gate.weight]
    grads = torch.autograd.grad(torch.nn.functional.cross_entropy(model(x), y), params, create_graph=True)
    return hutchinson(list(grads), params, 2, 0.0, torch.Generator().manual_seed(0))[1]


def test_statistics_of_a_hardsigmoid_gated_model_have_a_hessian_and_a_functional_one_warns():
    from evoproxy.errors import EvoproxyWarning
    from evoproxy.stats import StatsSettings, compute_stats

    settings = StatsSettings(hutchinson_samples=2, power_iters=2)
    stats = compute_stats(_GatedNet(), *_batch(), "gated", settings)
    assert all(torch.isfinite(torch.tensor([l.hessian_trace, l.hessian_eig])).all() for l in stats.layers)
    with pytest.warns(EvoproxyWarning, match="no second derivative of aten::hardsigmoid_backward"):
        stats = compute_stats(_GatedNet(functional=True), *_batch(), "gated", settings)
    assert all(torch.isnan(torch.tensor(l.hessian_trace)) for l in stats.layers)  # proxies reading H: invalid
    assert all(torch.isfinite(l.G).all() and l.Q for l in stats.layers)  # the rest stands


class _SelfAttention(torch.nn.Module):
    """nn.MultiheadAttention called as torchvision's ViT calls it (need_weights=False): through
    scaled_dot_product_attention, whose fused CPU kernel has no second derivative."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.embed, self.attn, self.head = (
            torch.nn.Linear(4, 16),
            torch.nn.MultiheadAttention(16, 2),
            torch.nn.Linear(16, 3),
        )
        self.attn.batch_first = True

    def forward(self, x):
        h = self.embed(x)
        return self.head(self.attn(h, h, h, need_weights=False)[0].mean(1))


def test_attention_through_scaled_dot_product_attention_gets_its_hessian():
    import warnings

    from evoproxy.stats import StatsSettings, compute_stats

    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(8, 6, 4, generator=g), torch.randint(0, 3, (8,), generator=g)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*Hessian.*")
        stats = compute_stats(_SelfAttention(), x, y, "attention", StatsSettings(hutchinson_samples=2, power_iters=2))
    assert [l.info.name for l in stats.layers] == ["embed", "head"]
    assert all(torch.isfinite(torch.tensor([l.hessian_trace, l.hessian_eig])).all() for l in stats.layers)


def test_split_attention_and_a_vit_of_torchvision_blocks_get_their_hessian():
    """Split into nn.Linear projections (as `load_model` gives it), the attention's q, k, v and
    out_proj are layers whose Hessian goes through scaled_dot_product_attention (need_weights=False)
    or the attention weights written out (need_weights=True, the default)."""
    import warnings

    import user_models
    from evoproxy.model import split_attention
    from evoproxy.stats import StatsSettings, compute_stats

    g = torch.Generator().manual_seed(0)
    settings = StatsSettings(hutchinson_samples=2, power_iters=2)
    cases = [
        (split_attention(_SelfAttention()), torch.randn(8, 6, 4, generator=g), "attn"),
        (split_attention(user_models.attention()), torch.randn(8, 6, 4, generator=g), "attn"),
        (user_models.common_block("vit-mha"), torch.rand(8, 1, 8, 8, generator=g), "block.self_attention"),
    ]
    for model, x, attention in cases:
        y = torch.randint(0, 3, (8,), generator=g)
        with warnings.catch_warnings():
            warnings.filterwarnings("error", message=".*(Hessian|full precision).*")
            stats = compute_stats(model, x, y, "split", settings)
        names = [l.info.name for l in stats.layers]
        assert all(f"{attention}.{p}" in names for p in ("q", "k", "v", "out_proj"))
        assert all(torch.isfinite(torch.tensor([l.hessian_trace, l.hessian_eig])).all() for l in stats.layers)
