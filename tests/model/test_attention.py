"""`split_attention`: nn.MultiheadAttention as the same attention with q, k and v as nn.Linear layers,
which `load_model` applies once a model's weights are loaded; what it cannot reproduce stays."""

import itertools

import pytest
import torch
from torch import nn

import user_models
from evoproxy.errors import EvoproxyWarning
from evoproxy.model import hf_state_dict, layer_registry, load_model, split_attention
from evoproxy.model.attention import SplitAttention

N, L, S, E, HEADS = 3, 5, 7, 16, 4


def _inputs(batch_first: bool, cross: bool, batched: bool, gen: torch.Generator):
    """query, key and value, in nn.MultiheadAttention's layout."""
    query = torch.randn(N, L, E, generator=gen)
    key = torch.randn(N, S, E, generator=gen) if cross else query
    if not batched:
        return query[0], key[0], key[0]
    if not batch_first:
        query, key = query.transpose(0, 1), key.transpose(0, 1)
    return query, key, key


def _masks(kind: str, length: int, batched: bool, gen: torch.Generator) -> dict:
    """Masks of `kind`, none of which masks a whole row out (which gives NaN in both)."""
    masks = {}
    if kind in ("bool", "both"):
        masks["attn_mask"] = (torch.rand(L, length, generator=gen) < 0.4).index_fill(1, torch.tensor([0]), False)
    if kind == "float":
        masks["attn_mask"] = torch.randn((N if batched else 1) * HEADS, L, length, generator=gen)
    if kind in ("padding", "both"):
        padding = (torch.rand(N, length, generator=gen) < 0.4).index_fill(1, torch.tensor([0]), False)
        masks["key_padding_mask"] = padding if batched else padding[0]
    return masks


@pytest.mark.parametrize("batch_first, cross, batched", itertools.product([True, False], repeat=3))
def test_split_attention_computes_what_multihead_attention_computes(batch_first, cross, batched):
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    for bias, masks in itertools.product([True, False], ["none", "bool", "float", "padding", "both"]):
        mha = nn.MultiheadAttention(E, HEADS, bias=bias, batch_first=batch_first).eval()
        split = SplitAttention(mha)
        query, key, value = _inputs(batch_first, cross, batched, gen)
        kwargs = _masks(masks, S if cross else L, batched, gen)
        for need_weights, average in [(True, True), (True, False), (False, True)]:
            args = dict(kwargs, need_weights=need_weights, average_attn_weights=average)
            want, got = mha(query, key, value, **args), split(query, key, value, **args)
            torch.testing.assert_close(got[0], want[0], rtol=0, atol=1e-6)
            if need_weights:
                torch.testing.assert_close(got[1], want[1], rtol=0, atol=1e-6)
            else:
                assert got[1] is None
        with torch.no_grad():  # nn.MultiheadAttention's fast path
            torch.testing.assert_close(
                split(query, key, value, need_weights=False)[0],
                mha(query, key, value, need_weights=False)[0],
                rtol=0,
                atol=1e-6,
            )


def test_dropout_in_train_mode_and_the_causal_hint():
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(E, HEADS, dropout=0.3, batch_first=True)
    split = SplitAttention(mha)
    x = torch.randn(N, L, E)
    for need_weights in (True, False):  # the same dropout draws from the same seed
        torch.manual_seed(1)
        want = mha(x, x, x, need_weights=need_weights)[0]
        torch.manual_seed(1)
        got = split(x, x, x, need_weights=need_weights)[0]
        torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
    assert not torch.equal(split(x, x, x)[0], split(x, x, x)[0])  # train mode: dropout draws
    mha.eval(), split.eval()
    causal = nn.Transformer.generate_square_subsequent_mask(L)
    torch.testing.assert_close(
        split(x, x, x, attn_mask=causal, is_causal=True, need_weights=False)[0],
        mha(x, x, x, attn_mask=causal, is_causal=True, need_weights=False)[0],
        rtol=0,
        atol=1e-6,
    )
    with pytest.raises(RuntimeError, match="is_causal"):  # as nn.MultiheadAttention: the hint needs its mask
        split(x, x, x, is_causal=True)


class _Kinds(nn.Module):
    """One nn.MultiheadAttention that splits (used twice), and those that stay."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.shared = nn.MultiheadAttention(E, HEADS, batch_first=True)
        self.again = self.shared
        self.kdim = nn.MultiheadAttention(E, HEADS, kdim=8, vdim=8, batch_first=True)
        self.bias_kv = nn.MultiheadAttention(E, HEADS, add_bias_kv=True, batch_first=True)
        self.zero = nn.MultiheadAttention(E, HEADS, add_zero_attn=True, batch_first=True)
        self.hooked = nn.MultiheadAttention(E, HEADS, batch_first=True)
        self.hooked.register_forward_hook(lambda *args: None)
        self.layer = nn.TransformerEncoderLayer(E, HEADS, 32, batch_first=True)


def test_split_attention_leaves_what_it_cannot_reproduce():
    model = split_attention(_Kinds())
    assert isinstance(model.shared, SplitAttention) and model.again is model.shared
    kept = [n for n, m in model.named_modules() if isinstance(m, nn.MultiheadAttention)]
    assert kept == ["kdim", "bias_kv", "zero", "hooked", "layer.self_attn"]


def test_weights_saved_from_the_original_model_load_and_save_back(tmp_path, monkeypatch):
    """`--weights` files hold in_proj_weight and in_proj_bias: the model loads them before its attention
    splits, computes what the original computes, and hf_state_dict writes the original layout back."""
    monkeypatch.chdir(tmp_path)
    original = user_models.attention()
    with torch.no_grad():
        for p in original.parameters():
            p.mul_(-1.5)  # not the weights the function gives
    torch.save(original.state_dict(), "w.pt")
    model, _ = load_model("user_models:attention", "w.pt")
    assert isinstance(model.attn, SplitAttention)
    x = torch.randn(4, 6, 4, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(model(x), original.eval()(x), rtol=0, atol=1e-6)
    assert [l.name for l in layer_registry(model, (6, 4))] == [
        "embed",
        "attn.q",
        "attn.k",
        "attn.v",
        "attn.out_proj",
        "head",
    ]
    back, want = hf_state_dict(model), original.state_dict()
    assert sorted(back) == sorted(want) and all(torch.equal(back[k], want[k]) for k in want)


def test_attention_that_stays_is_reported():
    with pytest.warns(EvoproxyWarning) as warned:
        layers = layer_registry(split_attention(user_models.zero_attention()), (6, 4))
    assert [l.name for l in layers] == ["embed", "head"]
    said = " ".join(str(w.message) for w in warned)
    assert "nn.MultiheadAttention (attn) stay at full precision" in said and "not called" in said
