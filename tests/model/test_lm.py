"""The shipped language model (TinyLM) and what a model's quality is measured in (metrics.py):
causality, the layer registry of its projections, second derivatives through attention, and
perplexity and accuracy with their directions, ranges and batch-by-batch sums."""

import math

import pytest
import torch
from torch import nn

from evoproxy.errors import EvoproxyError
from evoproxy.model import METRICS, TinyLM, accuracy, layer_registry, metric_of, next_token_loss, perplexity

SMALL = dict(dim=32, blocks=1, heads=2, hidden=64, context=16)


def _lm(seed=0, **kw):
    torch.manual_seed(seed)
    return TinyLM(**{**SMALL, **kw}).eval()


def _tokens(n, t, seed=0, high=256):
    return torch.randint(0, high, (n, t), generator=torch.Generator().manual_seed(seed))


class Uniform(nn.Module):
    """Equal logits over `vocab` for every position: perplexity exactly `vocab`."""

    def __init__(self, vocab):
        super().__init__()
        self.vocab = vocab

    def forward(self, tokens):
        return torch.zeros(*tokens.shape, self.vocab)


def test_tinylm_gives_next_byte_logits_for_every_position():
    model = _lm(blocks=2)
    tokens = _tokens(3, 16)
    logits = model(tokens)
    assert logits.shape == (3, 16, 256) and logits.dtype == torch.float32 and torch.isfinite(logits).all()
    assert model(tokens[:, :5]).shape == (3, 5, 256)  # any length up to the context


@pytest.mark.parametrize("t", [0, 6, 11])
def test_tinylm_is_causal(t):
    model = _lm(blocks=2)
    tokens = _tokens(2, 12, seed=1)
    changed = tokens.clone()
    changed[:, t] = (changed[:, t] + 1) % 256
    before, after = model(tokens), model(changed)
    assert torch.equal(before[:, :t], after[:, :t])  # earlier positions never see a later token
    diff = (before[:, t:] - after[:, t:]).abs().amax(-1)  # (2, 12 - t)
    assert (diff > 1e-6).all()  # the changed position and every later one do


def test_tinylm_positions_matter_and_the_context_bounds_the_length():
    model = _lm()
    same = torch.full((1, 8), 65)
    logits = model(same)
    assert not torch.allclose(logits[0, 0], logits[0, 5])  # the position table tells equal tokens apart
    with pytest.raises(RuntimeError):
        model(_tokens(1, 17))
    with pytest.raises(EvoproxyError, match=r"TinyLM does not accept inputs of shape \(17,\)"):
        layer_registry(model, (17,), input_dtype=torch.int64)


def test_tinylm_registry_lists_the_six_projections_of_each_block_then_the_head():
    dim, hidden, t = 32, 64, 10
    model = _lm(blocks=2)
    layers = layer_registry(model, (t,), input_dtype=torch.int64)
    per_block = ["attn.q", "attn.k", "attn.v", "attn.o", "fc1", "fc2"]
    assert [layer.name for layer in layers] == [f"blocks.{b}.{p}" for b in range(2) for p in per_block] + ["head"]
    assert [layer.index for layer in layers] == list(range(13))
    assert all(layer.kind == "linear" for layer in layers)
    by_name = {layer.name: layer for layer in layers}
    assert by_name["blocks.0.attn.q"].macs == t * dim * dim
    assert by_name["blocks.1.fc1"].macs == t * dim * hidden and by_name["blocks.1.fc1"].weight_shape == (hidden, dim)
    assert by_name["head"].macs == t * dim * 256 and by_name["head"].params == 256 * dim + 256
    # The embedding and the position table are not layers: they stay at full precision.
    assert sum(layer.params for layer in layers) == sum(
        p.numel() for n, p in model.named_parameters() if n.startswith("blocks.") and ".norm" not in n
    ) + sum(p.numel() for p in model.head.parameters())
    kept = layer_registry(model, (t,), exclude=("head",), input_dtype=torch.int64)
    assert [layer.name for layer in kept] == [layer.name for layer in layers[:-1]]
    assert [layer.name for layer in layer_registry(model, (t,), ("*.attn.*",), torch.int64)] == [
        "blocks.0.fc1",
        "blocks.0.fc2",
        "blocks.1.fc1",
        "blocks.1.fc2",
        "head",
    ]


def test_tinylm_registry_without_the_token_dtype_is_a_one_line_error():
    # Without input_dtype the registry probes with the parameters' dtype (float zeros), which the
    # embedding refuses: the error names the model and the data's shape, not a traceback.
    with pytest.raises(EvoproxyError, match=r"TinyLM does not accept inputs of shape \(8,\).*indices") as info:
        layer_registry(_lm(), (8,))
    assert "\n" not in str(info.value)


def test_second_derivatives_through_attention_match_finite_differences_of_the_gradient():
    model = _lm(seed=2).double()
    tokens, targets = _tokens(2, 9, seed=3), _tokens(2, 9, seed=4)
    params = [p for _, p in model.named_parameters()]

    def grads(create_graph=False):
        loss = next_token_loss(model(tokens), targets)
        return torch.autograd.grad(loss, params, create_graph=create_graph)

    g = grads(create_graph=True)
    v = [torch.randn(p.shape, generator=torch.Generator().manual_seed(i), dtype=p.dtype) for i, p in enumerate(params)]
    hv = torch.autograd.grad(sum((gi * vi).sum() for gi, vi in zip(g, v)), params)
    assert all(torch.isfinite(h).all() for h in hv)
    q = dict(zip([n for n, _ in model.named_parameters()], hv))["blocks.0.attn.q.weight"]
    assert q.abs().max() > 1e-6  # the loss is curved in the query weights: softmax's second derivative
    eps = 1e-5
    with torch.no_grad():
        for p, vi in zip(params, v):
            p.add_(eps * vi)
    g_plus = grads()
    with torch.no_grad():
        for p, vi in zip(params, v):
            p.sub_(2 * eps * vi)
    g_minus = grads()
    for h, gp, gm in zip(hv, g_plus, g_minus):
        assert torch.allclose(h, (gp - gm) / (2 * eps), rtol=1e-4, atol=1e-7)


def test_next_token_loss_is_the_mean_cross_entropy_over_every_position():
    logits = torch.randn(3, 5, 7, generator=torch.Generator().manual_seed(0))
    targets = _tokens(3, 5, high=7)
    manual = -logits.log_softmax(-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    assert torch.allclose(next_token_loss(logits, targets), manual.mean())
    assert torch.allclose(next_token_loss(logits, targets, reduction="sum"), manual.sum())
    flat = nn.functional.cross_entropy(logits[:, 0], targets[:, 0])  # a classifier's shapes: (N, C) and (N,)
    assert torch.allclose(next_token_loss(logits[:, 0], targets[:, 0]), flat)


@pytest.mark.parametrize("vocab", [2, 256, 1000])
def test_perplexity_of_uniform_logits_is_the_vocabulary_size(vocab):
    tokens = _tokens(5, 7, high=vocab)
    assert perplexity(Uniform(vocab), tokens, tokens, batch_size=2) == pytest.approx(vocab, rel=1e-9)


def test_perplexity_is_exp_of_the_mean_loss_and_the_same_in_batches_of_any_size():
    model = _lm(seed=1).double()
    tokens, targets = _tokens(7, 12, seed=5), _tokens(7, 12, seed=6)
    with torch.no_grad():
        expected = math.exp(float(next_token_loss(model(tokens), targets)))
    whole = perplexity(model, tokens, targets, batch_size=7)
    assert whole == pytest.approx(expected, rel=1e-12)
    for batch in (1, 3, 100):
        assert perplexity(model, tokens, targets, batch_size=batch) == pytest.approx(whole, rel=1e-12)
    assert METRICS["perplexity"].holds(whole) and whole > 1


def test_accuracy_is_the_same_in_batches_of_any_size():
    torch.manual_seed(0)
    model = nn.Linear(6, 4).double()
    images = torch.randn(23, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    labels = torch.randint(0, 4, (23,), generator=torch.Generator().manual_seed(2))
    correct = int((model(images).argmax(1) == labels).sum())
    whole = accuracy(model, images, labels, batch_size=23)
    assert whole == 100.0 * correct / 23
    assert all(accuracy(model, images, labels, batch_size=b) == whole for b in (1, 5, 100))
    assert METRICS["accuracy"].measure(model, images, labels, batch_size=4) == whole


def test_measure_puts_the_model_in_eval_mode():
    model = _lm().train()
    tokens = _tokens(2, 8)
    perplexity(model, tokens, tokens)
    assert not model.training


def test_metric_directions_ranges_and_formats():
    ppl, acc = METRICS["perplexity"], METRICS["accuracy"]
    assert (acc.name, ppl.name) == ("accuracy", "perplexity")
    assert acc.higher_is_better and not ppl.higher_is_better
    assert acc.quality(91.5) == 91.5 and ppl.quality(12.5) == -12.5
    assert ppl.quality(3.0) > ppl.quality(4.0)  # a lower perplexity ranks higher
    assert [ppl.holds(x) for x in (1.0, 1.5, 1e9, math.inf)] == [True] * 4
    assert [ppl.holds(x) for x in (0.999, 0.0, -1.0, math.nan)] == [False] * 4
    assert [acc.holds(x) for x in (0.0, 100.0)] == [True, True]
    assert [acc.holds(x) for x in (-0.1, 100.1, math.nan)] == [False] * 3
    assert acc.format(91.234) == "91.23 %" and ppl.format(4.56789) == "4.568"


def test_metric_of_reads_the_targets_shape():
    assert metric_of(torch.zeros(4, 9, dtype=torch.long)) is METRICS["perplexity"]
    assert metric_of(torch.zeros(4, dtype=torch.long)) is METRICS["accuracy"]


@pytest.mark.parametrize(
    "logits_shape, top, message",
    [
        ((2, 5, 10), 10, r"token ids up to 10"),  # a target beyond the vocabulary
        ((2, 10), 3, r"outputs of shape \(2, 10\)"),  # a classifier's logits for token targets
        ((2, 4, 10), 3, r"outputs of shape \(2, 4, 10\)"),  # another number of positions
    ],
)
def test_perplexity_refuses_logits_that_do_not_fit_the_targets(logits_shape, top, message):
    targets = torch.zeros(2, 5, dtype=torch.long)
    targets[0, 0] = top
    with pytest.raises(EvoproxyError, match=message):
        METRICS["perplexity"].batch_sum(torch.zeros(logits_shape), targets, top)


def test_accuracy_refuses_logits_that_do_not_fit_the_labels():
    with pytest.raises(EvoproxyError, match=r"\(batch, classes\) logits"):
        METRICS["accuracy"].batch_sum(torch.zeros(4, 3), torch.tensor([0, 1, 2, 3]), 3)
    with pytest.raises(EvoproxyError, match=r"\(batch, classes\) logits"):
        accuracy(Uniform(5), torch.zeros(4, 6, dtype=torch.long), torch.zeros(4, dtype=torch.long))


class Confident(nn.Module):
    """Logits of 10 000 on token 3 only: a model far off its targets (a loss of 10 000 nats)."""

    def forward(self, tokens):
        out = torch.zeros(*tokens.shape, 4)
        out[..., 3] = 1e4
        return out


def test_perplexity_of_a_model_far_off_its_targets_is_infinite_not_an_overflow():
    tokens = torch.zeros(2, 5, dtype=torch.long)
    value = perplexity(Confident(), tokens, tokens)
    assert value == math.inf and METRICS["perplexity"].holds(value)
