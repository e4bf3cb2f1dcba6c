"""Convolution and pooling from scratch. Twins in the tests: F.conv2d, F.max_pool2d, F.avg_pool2d.

Shapes: input x (N, C_in, H, W); weight (C_out, C_in / groups, kH, kW); bias (C_out,).
Output (N, C_out, H_out, W_out) with, per spatial dimension,

    H_out = floor((H + 2 * padding - dilation * (k - 1) - 1) / stride) + 1
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _pair(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)


def conv_output_size(
    size: int, kernel: int, stride: int = 1, padding: int = 0, dilation: int = 1
) -> int:
    """The output length of a convolution or pooling along one dimension."""
    return math.floor((size + 2 * padding - dilation * (kernel - 1) - 1) / stride) + 1


def conv2d_loop(
    x: Tensor, weight: Tensor, bias: Tensor | None = None, stride=1, padding=0
) -> Tensor:
    """The definition, as loops over output positions: readable, slow, for small inputs.

    out[n, o, i, j] = bias[o] + sum over c, u, v of x_pad[n, c, i*s + u, j*s + v] * weight[o, c, u,
    v] (the sum over n and c is done by one einsum per output position).
    """
    sh, sw = _pair(stride)
    ph, pw = _pair(padding)
    n, c, h, w = x.shape
    c_out, _, kh, kw = weight.shape
    xp = F.pad(x, (pw, pw, ph, ph))
    h_out, w_out = conv_output_size(h, kh, sh, ph), conv_output_size(w, kw, sw, pw)
    rows = []
    for i in range(h_out):
        cols = []
        for j in range(w_out):
            patch = xp[:, :, i * sh : i * sh + kh, j * sw : j * sw + kw]  # (N, C, kH, kW)
            cols.append(torch.einsum("ncuv,ocuv->no", patch, weight))  # (N, C_out)
        rows.append(torch.stack(cols, dim=-1))  # (N, C_out, W_out)
    out = torch.stack(rows, dim=-2)  # (N, C_out, H_out, W_out)
    return out + bias.view(1, -1, 1, 1) if bias is not None else out


def _taps(kernel, stride, dilation, h_out: int, w_out: int):
    """For each kernel offset (u, v), the strided slice of the padded input it reads."""
    (kh, kw), (sh, sw), (dh, dw) = kernel, stride, dilation
    return [
        (
            slice(u * dh, u * dh + sh * (h_out - 1) + 1, sh),
            slice(v * dw, v * dw + sw * (w_out - 1) + 1, sw),
        )
        for u in range(kh)
        for v in range(kw)
    ]


class Im2Col(torch.autograd.Function):
    """Unfold every receptive field into a column, batch included:
    (N, C, H, W) -> (C * kH * kW, N * H_out * W_out).

    Forward: kH * kW strided slices of the padded input, one per kernel offset (u, v), stacked
    after the channel axis (F.unfold's (C, kH, kW) row order). Slice (u, v) holds, for every
    output position of every image, the pixel that kernel tap multiplies. Putting the batch in the
    columns (not in front, as F.unfold does) makes the convolution one large matrix product
    instead of N small ones: the layout fast CPU convolutions use.
    Backward (col2im, unfold's adjoint): each column entry's gradient flows back to the pixel it
    was copied from; where windows overlap, the contributions add up.
    """

    @staticmethod
    def forward(ctx, x: Tensor, kernel, stride, padding, dilation) -> Tensor:
        n, c, h, w = x.shape
        (kh, kw), (ph, pw) = kernel, padding
        h_out = conv_output_size(h, kh, stride[0], ph, dilation[0])
        w_out = conv_output_size(w, kw, stride[1], pw, dilation[1])
        xp = x.new_zeros(c, n, h + 2 * ph, w + 2 * pw)  # (C, N, H+2p, W+2p): padded, channels first
        xp[:, :, ph : ph + h, pw : pw + w] = x.transpose(0, 1)
        taps = _taps(kernel, stride, dilation, h_out, w_out)
        ctx.meta = (x.shape, xp.shape, padding, taps, h_out, w_out)
        cols = torch.stack([xp[:, :, r, q] for r, q in taps], dim=1)  # (C, kH*kW, N, H_out, W_out)
        return cols.view(c * kh * kw, n * h_out * w_out)

    @staticmethod
    def backward(ctx, grad_cols: Tensor):
        (n, c, h, w), padded_shape, (ph, pw), taps, h_out, w_out = ctx.meta
        grad_cols = grad_cols.reshape(c, len(taps), n, h_out, w_out)
        grad_xp = grad_cols.new_zeros(padded_shape)  # (C, N, H+2p, W+2p)
        for t, (r, q) in enumerate(taps):
            grad_xp[:, :, r, q] += grad_cols[:, t]
        return (
            grad_xp[:, :, ph : ph + h, pw : pw + w].transpose(0, 1).contiguous(),
            None,
            None,
            None,
            None,
        )


def im2col(
    x: Tensor, kernel: tuple[int, int], stride=(1, 1), padding=(0, 0), dilation=(1, 1)
) -> Tensor:
    """(N, C, H, W) -> (N, C * kH * kW, H_out * W_out), F.unfold's layout (a view of
    ``Im2Col``'s)."""
    n = x.shape[0]
    cols = Im2Col.apply(x, tuple(kernel), tuple(stride), tuple(padding), tuple(dilation))
    return cols.view(cols.shape[0], n, -1).transpose(0, 1)


def conv2d(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    stride=1,
    padding=0,
    dilation=1,
    groups: int = 1,
) -> Tensor:
    """Convolution as one matrix product: unfold every receptive field into a column, then multiply.

    im2col: (K, N * L), K = C_in * kH * kW rows, one column per output position of every image
    (L = H_out * W_out). Per group g: out_g = W_g (C_out/G, K/G) @ cols_g (K/G, N * L): a single
    large product, where F.unfold's (N, K, L) layout would make N small ones (about 2x slower).
    Autograd derives the backward pass through the product (the tests compare it with F.conv2d's
    input, weight and bias gradients); ``Im2Col`` supplies col2im.
    """
    n, c_in, h, w = x.shape
    c_out, c_per_group, kh, kw = weight.shape
    if c_in % groups or c_out % groups or c_per_group != c_in // groups:
        raise ValueError(
            f"groups={groups} does not fit C_in={c_in}, C_out={c_out}, weight {tuple(weight.shape)}"
        )
    stride, padding, dilation = _pair(stride), _pair(padding), _pair(dilation)
    h_out = conv_output_size(h, kh, stride[0], padding[0], dilation[0])
    w_out = conv_output_size(w, kw, stride[1], padding[1], dilation[1])
    cols = Im2Col.apply(x, (kh, kw), stride, padding, dilation)  # (K, N*L)
    cols = cols.view(groups, c_per_group * kh * kw, n * h_out * w_out)  # (G, K/G, N*L)
    # reshape, not view: a channels-last weight (--channels-last) is not contiguous in this order
    wg = weight.reshape(groups, c_out // groups, c_per_group * kh * kw)  # (G, C_out/G, K/G)
    if bias is not None:  # out = bias + W @ cols, the bias added inside the product
        out = torch.baddbmm(bias.view(groups, c_out // groups, 1), wg, cols)  # (G, C_out/G, N*L)
    else:
        out = torch.matmul(wg, cols)
    return out.view(c_out, n, h_out, w_out).transpose(0, 1).contiguous()  # (N, C_out, H_out, W_out)


def max_pool2d(x: Tensor, kernel_size, stride=None, padding=0) -> Tensor:
    """The largest value of each window; padding counts as -inf so it never wins."""
    k, s, p = (
        _pair(kernel_size),
        _pair(stride if stride is not None else kernel_size),
        _pair(padding),
    )
    n, c, h, w = x.shape
    h_out, w_out = conv_output_size(h, k[0], s[0], p[0]), conv_output_size(w, k[1], s[1], p[1])
    xp = F.pad(x, (p[1], p[1], p[0], p[0]), value=float("-inf")) if any(p) else x
    cols = im2col(xp.reshape(n * c, 1, *xp.shape[2:]), k, s)  # (N*C, kH*kW, L)
    # max's gradient flows to the one position it picked, as max_pool2d's does.
    return cols.max(dim=1).values.view(n, c, h_out, w_out)


def avg_pool2d(x: Tensor, kernel_size, stride=None, padding=0) -> Tensor:
    """The mean of each window, zero padding included in the count (F.avg_pool2d's default)."""
    k, s, p = (
        _pair(kernel_size),
        _pair(stride if stride is not None else kernel_size),
        _pair(padding),
    )
    n, c, h, w = x.shape
    h_out, w_out = conv_output_size(h, k[0], s[0], p[0]), conv_output_size(w, k[1], s[1], p[1])
    cols = im2col(x.reshape(n * c, 1, h, w), k, s, p)  # (N*C, kH*kW, L)
    return cols.mean(dim=1).view(n, c, h_out, w_out)


class Conv2d(nn.Module):
    """A conv layer on the unfold + matmul ``conv2d``, initialised exactly as ``nn.Conv2d``."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size,
        stride=1,
        padding=0,
        dilation=1,
        groups: int = 1,
        bias: bool = True,
    ):
        super().__init__()
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.kernel_size, self.stride = _pair(kernel_size), _pair(stride)
        self.padding, self.dilation = _pair(padding), _pair(dilation)
        self.weight = nn.Parameter(
            torch.empty(out_channels, in_channels // groups, *self.kernel_size)
        )
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        fan_in = self.weight.shape[1] * self.kernel_size[0] * self.kernel_size[1]
        # nn.Conv2d: kaiming_uniform(a=sqrt(5)) on the weight, U(-1/sqrt(fan_in), ...) on the bias.
        std = math.sqrt(2.0 / (1 + 5)) / math.sqrt(fan_in)
        with torch.no_grad():
            self.weight.uniform_(-math.sqrt(3.0) * std, math.sqrt(3.0) * std)
            if self.bias is not None:
                bound = 1 / math.sqrt(fan_in)
                self.bias.uniform_(-bound, bound)

    def forward(self, x: Tensor) -> Tensor:
        return conv2d(
            x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups
        )

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size},"
            f" stride={self.stride}, padding={self.padding}, groups={self.groups}"
        )
