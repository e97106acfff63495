"""nn.MultiheadAttention with its q, k and v projections as nn.Linear layers. nn.MultiheadAttention
applies them as one bare parameter (in_proj_weight) and its out_proj as a function, so that no stage
would see them as layers; `load_model` replaces it by SplitAttention, which computes the same."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# torch's Transformer layers read their attention's fused in_proj_weight for their fast paths.
_TORCH_TRANSFORMER = "torch.nn.modules.transformer"


def _projection(weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Linear:
    linear = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None, device="meta")
    linear.weight = nn.Parameter(weight.detach().clone())  # meta: no initialisation, both are replaced
    if bias is not None:
        linear.bias = nn.Parameter(bias.detach().clone())
    return linear


def _additive(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """`mask` as the float mask added to the attention scores: a boolean one's True (masked out) as -inf."""
    if mask.dtype == torch.bool:
        return torch.zeros_like(mask, dtype=dtype).masked_fill(mask, float("-inf"))
    return mask.to(dtype)


class SplitAttention(nn.Module):
    """The attention of an nn.MultiheadAttention that `splittable` accepts, with q, k and v as nn.Linear
    layers beside its out_proj; its forward takes nn.MultiheadAttention's arguments and returns its
    (output, weights or None), batched or not, batch first or not, dropout in train mode."""

    def __init__(self, mha: nn.MultiheadAttention):
        super().__init__()
        biases = mha.in_proj_bias.chunk(3) if mha.in_proj_bias is not None else (None,) * 3
        self.q, self.k, self.v = (_projection(w, b) for w, b in zip(mha.in_proj_weight.chunk(3), biases))
        self.out_proj = mha.out_proj
        self.num_heads, self.dropout, self.batch_first = mha.num_heads, mha.dropout, mha.batch_first
        self.train(mha.training)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        """(…, length, embed) as (…, heads, length, head dim); the sequence first where not batch first."""
        if not self.batch_first:
            x = x.movedim(0, -2)  # an unbatched (length, embed) stays as it is
        return x.unflatten(-1, (self.num_heads, -1)).transpose(-3, -2)

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        key_padding_mask: torch.Tensor | None = None,
        need_weights: bool = True,
        attn_mask: torch.Tensor | None = None,
        average_attn_weights: bool = True,
        is_causal: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        # No branch on the inputs' shapes: torch.fx traces it (q, k, v and out_proj as modules) where
        # the masks are None, as in torchvision's ViT.
        if is_causal and attn_mask is None:  # the hint only names the mask, as in nn.MultiheadAttention
            raise RuntimeError("Need attn_mask if specifying the is_causal hint")
        q, k, v = self._heads(self.q(query)), self._heads(self.k(key)), self._heads(self.v(value))
        mask = None if attn_mask is None else _additive(attn_mask, q.dtype)
        if mask is not None and mask.dim() == 3:  # (batch × heads, L, S), or (heads, L, S) unbatched
            mask = mask.view(q.shape[:-1] + k.shape[-2:-1])
        if key_padding_mask is not None:  # (batch, S), or (S,) unbatched
            padding = _additive(key_padding_mask, q.dtype)[..., None, None, :]
            mask = padding if mask is None else mask + padding
        dropout = self.dropout if self.training else 0.0
        weights = None
        if need_weights:
            scores = (q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)
            weights = torch.softmax(scores if mask is None else scores + mask, -1)
            if dropout:
                weights = F.dropout(weights, dropout)
            out = weights @ v
            if average_attn_weights:
                weights = weights.mean(-3)
        else:
            out = F.scaled_dot_product_attention(q, k, v, mask, dropout)
        out = self.out_proj(out.transpose(-3, -2).flatten(-2))
        return (out if self.batch_first else out.movedim(-2, 0)), weights


def splittable(module: nn.Module) -> bool:
    """Whether `module` is an nn.MultiheadAttention whose attention SplitAttention computes exactly: one
    embed dim for q, k and v, no bias_k and bias_v, no add_zero_attn, no hooks of its own."""
    return (
        type(module) is nn.MultiheadAttention
        and module._qkv_same_embed_dim
        and module.bias_k is None
        and not module.add_zero_attn
        and not (module._forward_hooks or module._forward_pre_hooks or module._backward_hooks)
    )


def split_attention(model: nn.Module) -> nn.Module:
    """`model`, each nn.MultiheadAttention of it that `splittable` accepts replaced in place by its
    SplitAttention (one shared by the parents that share it), except inside torch's Transformer layers."""
    done: dict[int, SplitAttention] = {}
    for parent in list(model.modules()):
        if type(parent).__module__ == _TORCH_TRANSFORMER:
            continue
        for name, child in list(parent._modules.items()):  # named_children would skip a repeated child
            if splittable(child):
                if id(child) not in done:
                    done[id(child)] = SplitAttention(child)
                setattr(parent, name, done[id(child)])
    return model


def fused_state_dict(model: nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`state` (`model`'s state_dict) with the q, k and v of each SplitAttention of `model` as
    nn.MultiheadAttention stores them: in_proj_weight and in_proj_bias, for a checkpoint of the original."""
    for name, module in model.named_modules():
        if isinstance(module, SplitAttention):
            prefix = f"{name}." if name else ""
            state[f"{prefix}in_proj_weight"] = torch.cat([state.pop(f"{prefix}{p}.weight") for p in "qkv"])
            if module.q.bias is not None:
                state[f"{prefix}in_proj_bias"] = torch.cat([state.pop(f"{prefix}{p}.bias") for p in "qkv"])
    return state
