"""The recall study's model family: token embedding, two blocks of
(pre-norm sequence mixer + residual, pre-norm MLP + residual), a final norm and
a linear readout over the vocabulary. Only the mixer changes between models;
its sequence mixing runs through seqk.torch (seqk's C kernels forward and
backward); projections, short convolutions, norms and gates are plain PyTorch.

Mixers (d_model = H * K, K = V = head dim, the same for all):

  softmax_attention  q, k, v; rotary position embedding on q, k; causal
                     softmax attention (seqk.torch.attention_parallel)
  linear_attention   elu(x)+1 feature map, Katharopoulos normaliser
                     (seqk.torch.linear_attention, normalize=True)
  retention          RetNet's fixed per-head decays (seqk.torch.retention,
                     gamma=None: seqk.retention_default_gammas)
  mamba2             gated retention as Mamba2 / SSD: x, B, C, dt projections,
                     dt = softplus(. + dt_bias), A = -exp(A_log), D skip
                     (seqk.torch.mamba2; Nst = K, P = V, one B/C group per head)
  deltanet           the delta rule, L2-normalised q, k, beta = sigmoid(.)
                     (seqk.torch.deltanet, l2norm_qk=True)
  gated_deltanet     deltanet with a log-gate g = logsigmoid(.) per token/head
  titans             Titans' linear memory with momentum and forgetting,
                     eta, theta, alpha = sigmoid(.), L2-normalised q, k
                     (seqk.torch.titans when this seqk has it)

Every mixer has the same block around its sequence mixing:

- a causal depthwise short convolution (width 4, SiLU) on its q/k/v-like
  inputs (Mamba2 on x, B, C). Mamba2, DeltaNet, gated DeltaNet and Titans
  have one by design, and Zoology's and flash-linear-attention's MQAR set-ups
  give one to linear attention and retention (without it a linear-state mixer
  has no cheap way to tie a value to the key before it). Softmax attention
  gets it too (RecallModel(attn_conv=True), the study's config "attn_conv"):
  it speeds up its learning (T = 128, 400 steps, lr 5e-3: 1.000 at 8-28 pairs
  with it, 0.96-0.97 without); attn_conv=False gives the rotary-only mixer.
- a per-head RMSNorm of the mixer's output before the output projection (as
  fla's layers and RetNet's group norm do). Softmax attention gets it too
  (RecallModel(attn_norm=True), the study's config "attn_norm"): without it
  (the 2026-12-04 run) softmax attention did not leave the loss plateau at
  T = 128 in 400 steps (0.08-0.10 accuracy at lr 5e-3 or 2e-2; 1e-3: chance).
  Measured at initialisation, the attention output's RMS is 0.16 (SiLU'd
  values averaged over the causal window) against a residual stream of RMS 1,
  so the norm scales the mixer's output, and the gradients into q, k, v
  through it, by ~6x; with it the same training reaches 1.000 at every T=128
  setting (the loss leaves the plateau after ~150 of 400 steps).
  attn_norm=False gives the attention block without the norm.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

import seqk.torch as st

MIXERS = ["softmax_attention", "linear_attention", "retention", "mamba2", "deltanet", "gated_deltanet", "titans"]

LABELS = {
    "softmax_attention": "softmax attention",
    "linear_attention": "linear attention",
    "retention": "retention",
    "mamba2": "gated retention / Mamba2",
    "deltanet": "DeltaNet",
    "gated_deltanet": "gated DeltaNet",
    "titans": "Titans",
}


def titans_available():
    return hasattr(st, "titans")


def state_floats(mixer, T, H, K, V):
    """Floats of recurrent state per sequence and layer (the KV cache for
    softmax attention at length T)."""
    if mixer == "softmax_attention":
        return T * H * (K + V)
    if mixer == "titans":
        return 2 * H * K * V  # the memory M and its momentum S (K x V each)
    return H * K * V


class ShortConv(nn.Module):
    """Causal depthwise convolution over time, width w, then SiLU: [B, T, C] -> [B, T, C]."""

    def __init__(self, channels, width=4):
        super().__init__()
        self.width = width
        self.conv = nn.Conv1d(channels, channels, width, groups=channels, padding=width - 1)

    def forward(self, x):
        T = x.shape[1]
        y = self.conv(x.transpose(1, 2))[..., :T]
        return F.silu(y.transpose(1, 2))


def rope(x, base=10000.0):
    """Rotary position embedding on [B, T, H, K] (K even), halves rotated."""
    B, T, H, K = x.shape
    half = K // 2
    inv = base ** (-torch.arange(half, dtype=torch.float32) / half)
    ang = torch.arange(T, dtype=torch.float32)[:, None] * inv[None, :]
    cos, sin = ang.cos()[None, :, None, :], ang.sin()[None, :, None, :]
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1).contiguous()


class Mixer(nn.Module):
    def __init__(self, kind, d_model, heads, sctx, titans_minibatch=8, attn_conv=False, attn_norm=True):
        super().__init__()
        if d_model % heads:
            raise ValueError("d_model %d not a multiple of heads %d" % (d_model, heads))
        self.kind, self.H, self.dk = kind, heads, d_model // heads
        self.sctx = sctx
        self.minibatch = titans_minibatch
        H, dk = heads, self.dk
        ngates = {"deltanet": 1, "gated_deltanet": 2, "titans": 3, "mamba2": 1}.get(kind, 0)
        self.ngates = ngates
        self.in_proj = nn.Linear(d_model, 3 * H * dk + ngates * H, bias=False)
        self.conv = None if (kind == "softmax_attention" and not attn_conv) else ShortConv(3 * H * dk)
        # the per-head output norm: every mixer by default (attn_norm=False: softmax attention without)
        self.out_norm = None if (kind == "softmax_attention" and not attn_norm) else nn.RMSNorm(dk, eps=1e-5)
        self.out_proj = nn.Linear(H * dk, d_model, bias=False)
        if ngates:
            self.gate_bias = nn.Parameter(torch.zeros(ngates, H))
        if kind == "gated_deltanet":
            with torch.no_grad():
                self.gate_bias[1].fill_(5.0)  # g = logsigmoid(5 + .) ~ -0.007: a slow decay to start
        if kind == "titans":
            with torch.no_grad():
                self.gate_bias[0].fill_(-2.0)  # eta (momentum) ~ 0.12
                self.gate_bias[1].fill_(0.0)  # theta (learning rate) ~ 0.5
                self.gate_bias[2].fill_(-5.0)  # alpha (forgetting) ~ 0.007
        if kind == "mamba2":
            # mamba_ssm's initialisation: A in [1, 16], dt in [1e-3, 1e-1]
            self.A_log = nn.Parameter(torch.log(torch.linspace(1.0, 16.0, H)))
            dt = torch.exp(torch.rand(H) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3))
            with torch.no_grad():
                self.gate_bias[0].copy_(dt + torch.log(-torch.expm1(-dt)))  # softplus^-1(dt)
            self.D = nn.Parameter(torch.ones(H))

    def forward(self, x):
        B, T, _ = x.shape
        H, dk = self.H, self.dk
        z = self.in_proj(x)
        qkv, gates = z[..., :3 * H * dk], z[..., 3 * H * dk:]
        if self.conv is not None:
            qkv = self.conv(qkv)
        q, k, v = (t.reshape(B, T, H, dk).contiguous() for t in qkv.split(H * dk, dim=-1))
        if self.ngates:
            gates = gates.reshape(B, T, self.ngates, H) + self.gate_bias

            def gate(i):
                return gates[:, :, i, :].contiguous()
        kind, c = self.kind, self.sctx
        if kind == "softmax_attention":
            o = st.attention_parallel(rope(q), rope(k), v, causal=True, ctx=c)
        elif kind == "linear_attention":
            o = st.linear_attention(q, k, v, feature_map="elu1", normalize=True, ctx=c)
        elif kind == "retention":
            o = st.retention(q, k, v, ctx=c)
        elif kind == "mamba2":
            A = -torch.exp(self.A_log)
            # q ~ C, k ~ B, v ~ x; dt's bias is in gate_bias, applied above
            o = st.mamba2(v, gate(0), A, k, q, self.D, dt_softplus=True, ctx=c)
        elif kind == "deltanet":
            o = st.deltanet(q, k, v, torch.sigmoid(gate(0)), l2norm_qk=True, ctx=c)
        elif kind == "gated_deltanet":
            o = st.deltanet(q, k, v, torch.sigmoid(gate(0)), F.logsigmoid(gate(1)), l2norm_qk=True, ctx=c)
        elif kind == "titans":
            eta, theta, alpha = (torch.sigmoid(gate(i)) for i in range(3))
            o = st.titans(q, k, v, eta, theta, alpha, minibatch=self.minibatch, l2norm_qk=True, ctx=c)
        else:
            raise ValueError("unknown mixer %r" % kind)
        if self.out_norm is not None:
            o = self.out_norm(o)
        return self.out_proj(o.reshape(B, T, H * dk))


class RecallModel(nn.Module):
    def __init__(self, kind, vocab, d_model=64, heads=2, layers=2, mlp_mult=2, sctx=None, titans_minibatch=8,
                 attn_conv=False, attn_norm=True):
        super().__init__()
        self.embed = nn.Embedding(vocab, d_model)
        self.blocks = nn.ModuleList()
        for _ in range(layers):
            self.blocks.append(nn.ModuleDict(dict(
                norm1=nn.RMSNorm(d_model, eps=1e-5),
                mixer=Mixer(kind, d_model, heads, sctx, titans_minibatch, attn_conv, attn_norm),
                norm2=nn.RMSNorm(d_model, eps=1e-5),
                mlp=nn.Sequential(nn.Linear(d_model, mlp_mult * d_model), nn.GELU(),
                                  nn.Linear(mlp_mult * d_model, d_model)),
            )))
        self.norm = nn.RMSNorm(d_model, eps=1e-5)
        self.readout = nn.Linear(d_model, vocab, bias=False)

    def forward(self, tokens):
        x = self.embed(tokens)
        for b in self.blocks:
            x = x + b["mixer"](b["norm1"](x))
            x = x + b["mlp"](b["norm2"](x))
        return self.readout(self.norm(x))
