import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lab3_transformer import ops


def qkv(seed, b=2, h=3, tq=5, tk=7, d=8, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return [
        torch.randn(b, h, t, d, generator=g, dtype=dtype, requires_grad=True) for t in (tq, tk, tk)
    ]


def check_against_sdpa(q, k, v, **kw):
    out, w = ops.scaled_dot_product_attention(q, k, v, **kw)
    q2, k2, v2 = (t.detach().clone().requires_grad_(True) for t in (q, k, v))
    ref_kw = dict(kw)
    pad = ref_kw.pop("key_padding_mask", None)
    if pad is not None:
        keep = ~pad[:, None, None, :]
        m = ref_kw.get("attn_mask")
        ref_kw["attn_mask"] = (
            keep
            if m is None
            else (m & keep if m.dtype == torch.bool else m.masked_fill(~keep, float("-inf")))
        )
    ref = F.scaled_dot_product_attention(q2, k2, v2, **ref_kw)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    g = torch.randn_like(out)
    (out * g).sum().backward()
    (ref * g).sum().backward()
    for a, b in zip((q, k, v), (q2, k2, v2), strict=True):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-5)
    assert w.shape == out.shape[:-1] + (k.shape[-2],)
    torch.testing.assert_close(w.sum(-1), torch.ones(w.shape[:-1]))
    return w


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_plain_attention_matches_sdpa(seed):
    check_against_sdpa(*qkv(seed))


@pytest.mark.parametrize("seed", [0, 1])
def test_causal_matches_sdpa_and_weights_are_lower_triangular(seed):
    w = check_against_sdpa(*qkv(seed, tq=6, tk=6), is_causal=True)
    assert torch.all(w.triu(1) == 0)


@pytest.mark.parametrize("seed", [0, 1])
def test_boolean_and_additive_masks_match_sdpa(seed):
    g = torch.Generator().manual_seed(seed + 10)
    bool_mask = torch.rand(5, 7, generator=g) > 0.3
    bool_mask[:, 0] = True  # every query may attend somewhere
    w = check_against_sdpa(*qkv(seed), attn_mask=bool_mask)
    assert torch.all(w[..., ~bool_mask] == 0)
    additive = torch.randn(5, 7, generator=g)
    check_against_sdpa(*qkv(seed), attn_mask=additive)


def test_key_padding_mask_hides_padding():
    q, k, v = qkv(3, b=2, tq=4, tk=6)
    pad = torch.tensor([[False] * 6, [False, False, False, False, True, True]])
    w = check_against_sdpa(q, k, v, key_padding_mask=pad)
    assert torch.all(w[1, :, :, 4:] == 0)


def test_fully_masked_query_gives_zeros_not_nan():
    q, k, v = qkv(0, tq=2, tk=3)
    mask = torch.tensor([[False, False, False], [True, True, True]])
    out, w = ops.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    assert torch.isfinite(out).all() and torch.all(out[:, :, 0] == 0) and torch.all(w[:, :, 0] == 0)


def test_gradcheck_float64():
    q, k, v = qkv(0, b=1, h=2, tq=3, tk=4, d=5, dtype=torch.float64)
    assert torch.autograd.gradcheck(
        lambda q, k, v: ops.scaled_dot_product_attention(q, k, v, is_causal=False)[0], (q, k, v)
    )


@pytest.mark.parametrize("masks", ["none", "causal", "padding", "both"])
@pytest.mark.parametrize("attention", ["scratch", "torch"])
def test_multi_head_attention_matches_nn_with_same_weights(masks, attention):
    torch.manual_seed(0)
    e, h, b, t = 16, 4, 3, 6
    ref = nn.MultiheadAttention(e, h, batch_first=True)
    ours = ops.MultiHeadAttention(e, h, attention=attention)
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(b, t, e, requires_grad=True)
    x2 = x.detach().clone().requires_grad_(True)
    causal = masks in ("causal", "both")
    pad = torch.zeros(b, t, dtype=torch.bool)
    if masks in ("padding", "both"):
        pad[1, -2:] = True
    ours_kw = {"is_causal": causal, "key_padding_mask": pad if pad.any() else None}
    ref_kw = {
        "key_padding_mask": pad if pad.any() else None,
        "need_weights": True,
        "average_attn_weights": False,
    }
    if causal:  # nn.MultiheadAttention's boolean attn_mask is True where attention is NOT allowed
        ref_kw["attn_mask"] = torch.ones(t, t, dtype=torch.bool).triu(1)
    out, w = ours(x, x, x, **ours_kw)
    ref_out, ref_w = ref(x2, x2, x2, **ref_kw)
    torch.testing.assert_close(out, ref_out, rtol=1e-5, atol=1e-5)
    if w is not None:
        assert w.shape == (b, h, t, t)
        torch.testing.assert_close(w, ref_w, rtol=1e-5, atol=1e-6)
    out.sum().backward()
    ref_out.sum().backward()
    torch.testing.assert_close(x.grad, x2.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(
        ours.in_proj_weight.grad, ref.in_proj_weight.grad, rtol=1e-4, atol=1e-5
    )


def test_layer_norm_matches_nn():
    torch.manual_seed(0)
    ours, ref = ops.LayerNorm(12), nn.LayerNorm(12)
    with torch.no_grad():
        ours.weight.normal_()
        ours.bias.normal_()
        ref.load_state_dict(ours.state_dict())
    x = (torch.randn(4, 5, 12) * 3 + 2).requires_grad_(True)  # a leaf: its gradient is kept
    x2 = x.detach().clone().requires_grad_(True)
    torch.testing.assert_close(ours(x), ref(x2))
    ours(x).pow(2).sum().backward()
    ref(x2).pow(2).sum().backward()
    torch.testing.assert_close(x.grad, x2.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(ours.weight.grad, ref.weight.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(ours.bias.grad, ref.bias.grad, rtol=1e-4, atol=1e-5)


def test_sinusoidal_positions_properties():
    pe = ops.sinusoidal_positions(50, 16)
    assert pe.shape == (50, 16) and pe.abs().max() <= 1
    torch.testing.assert_close(pe[0, 0::2], torch.zeros(8))
    torch.testing.assert_close(pe[0, 1::2], torch.ones(8))
    torch.testing.assert_close(
        (pe[:, 0::2] ** 2 + pe[:, 1::2] ** 2), torch.ones(50, 8)
    )  # each pair on a circle
    # A fixed offset is a rotation: PE[p + k] = R(k) PE[p] for every p, pair by pair.
    k, i = 3, 2
    freq = math.exp(-math.log(10000.0) * 2 * i / 16)
    rot = torch.tensor(
        [[math.cos(k * freq), -math.sin(k * freq)], [math.sin(k * freq), math.cos(k * freq)]]
    )
    pairs = pe[:, 2 * i : 2 * i + 2]
    torch.testing.assert_close(pairs[:-k] @ rot, pairs[k:], rtol=1e-4, atol=1e-4)
    assert len({tuple(r) for r in pe.round(decimals=4).tolist()}) == 50  # every position distinct
