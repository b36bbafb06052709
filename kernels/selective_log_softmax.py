"""Selective log-softmax with entropy, from logits: log p(target) and H(p) per row, p = softmax(z / T).

    logprobs_N, entropy_N = logits_logprobs(logits_N_V, targets_N, temperature=1.0)

For models whose LM head cannot be separated from the body (otherwise use `linear_logprobs`, which
never holds the logits at all). The naive path, `log_softmax(z).gather(targets)` plus
`-(p * log p).sum()`, keeps several fp32 [N, V] tensors alive for backward (log-probs, probabilities,
their product); this one keeps only the per-row logsumexp and entropy ([N] each) and rebuilds p from
the logits in backward, so the only [N, V] tensor it allocates is the logits' own gradient.

Math, with z = logits / T, lse = logsumexp(z), log p = z - lse:
    logprob = z[target] - lse
    entropy = -sum_j p_j log p_j = lse - sum_j p_j z_j
    d logprob / d z_j = 1[j = target] - p_j
    d entropy / d z_j = -p_j (log p_j + entropy)
and d/d logits = (d/d z) / T. The forward uses an online logsumexp (Milakov & Gimelshein 2018,
"Online normalizer calculation for softmax") carrying the running max m, s = sum exp(z - m) and
t = sum exp(z - m) (z - m), so entropy = log s - t / s without the cancellation of lse - E[z].

Four parts: `logits_logprobs_reference` (plain torch, fp32), the Triton kernels, `LogitsLogprobs`
(autograd), and `logits_logprobs` (Triton on CUDA, a row-chunked torch path elsewhere). The tile
helpers (`tile_stats_`, `rows_grad_`, and the jitted `online_update`, `logit_grad`) are shared with
`linear_logprobs`.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from rlvr.kernels import dispatch
from rlvr.kernels.dispatch import Backend, next_power_of_2, no_autocast, use_triton


def logits_logprobs_reference(
    logits_N_V: torch.Tensor, targets_N: torch.Tensor, temperature: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """The definition, in fp32 autograd torch (materialises several [N, V] tensors)."""
    logp_N_V = torch.log_softmax(logits_N_V.float() / temperature, dim=-1)
    logprobs_N = logp_N_V.gather(-1, targets_N.long()[:, None]).squeeze(-1)
    entropy_N = -(logp_N_V.exp() * logp_N_V).sum(-1)
    return logprobs_N, entropy_N


# ----------------------------------------------------------------------------- torch row helpers


def tile_stats_(z_n_v: torch.Tensor, work_n_v: torch.Tensor, finite: bool = True):
    """Per row of an fp32 tile z: m = max z, s = sum exp(z - m), t = sum exp(z - m) (z - m).

    Overwrites z with z - m and work with exp(z - m) (z - m). finite=False allows -inf logits
    (masked vocabulary; a row must still have a finite one) at the cost of one more pass.
    """
    m_n = z_n_v.amax(dim=1)
    z_n_v.sub_(m_n[:, None])
    e_n_v = torch.exp(z_n_v, out=work_n_v)
    s_n = e_n_v.sum(dim=1)
    e_n_v.mul_(z_n_v)  # in place: a bmm row-dot is 8x slower on CPU, a new [n, v] tensor page-faults
    if not finite:  # 0 * -inf where a logit is -inf
        e_n_v.nan_to_num_(nan=0.0)
    return m_n, s_n, e_n_v.sum(dim=1)


def rows_forward_(z_n_V: torch.Tensor, targets_n: torch.Tensor, work_n_V: torch.Tensor):
    """(logprob, entropy, lse) per row of fp32 z = logits / T over the whole vocabulary."""
    zt_n = z_n_V.gather(1, targets_n[:, None]).squeeze(1)
    m_n, s_n, t_n = tile_stats_(z_n_V, work_n_V, finite=False)
    lse_n = m_n + s_n.log()
    return zt_n - lse_n, lse_n - m_n - t_n / s_n, lse_n


def grad_coefficients(entropy_N, dlogprobs_N, dentropy_N):
    """(a, c) of `logit_grad` from the upstream gradients, either of which may be None."""
    if dentropy_N is None:
        return torch.zeros_like(entropy_N), -dlogprobs_N
    c = dentropy_N * entropy_N if dlogprobs_N is None else dlogprobs_N + dentropy_N * entropy_N
    return -dentropy_N, -c


def rows_grad_(
    z_n_v: torch.Tensor,
    work_n_v: torch.Tensor,
    lse_n: torch.Tensor,
    entropy_n: torch.Tensor,
    dlogprobs_n: torch.Tensor | None,
    dentropy_n: torch.Tensor | None,
    targets_n: torch.Tensor,
    col0: int,
    inv_temperature: float,
    finite: bool,
) -> torch.Tensor:
    """Gradient w.r.t. the logits of columns [col0, col0 + v) of fp32 z = logits / T, written into z.

    Works on a column slice so that `linear_logprobs` can tile the vocabulary in backward. With
    a = -dH / T and c = -(dlogprob + dH * H) / T per row, the gradient is p * (a * log p + c), plus
    dlogprob / T at the target: four passes over the tile.
    """
    logp = z_n_v.sub_(lse_n[:, None])
    p = torch.exp(logp, out=work_n_v)
    if dentropy_n is not None:
        if not finite:  # a -inf logit would give -inf * 0 below
            logp.clamp_(min=-1e30)
        a_n, c_n = grad_coefficients(entropy_n, dlogprobs_n, dentropy_n)
        g = torch.addcmul((c_n * inv_temperature)[:, None], logp, (a_n * inv_temperature)[:, None], out=logp).mul_(p)
    else:
        g = torch.mul(p, (dlogprobs_n * -inv_temperature)[:, None], out=z_n_v)
    if dlogprobs_n is not None:
        local = targets_n - col0
        rows = ((local >= 0) & (local < z_n_v.shape[1])).nonzero().squeeze(1)
        g.index_put_((rows, local[rows]), dlogprobs_n[rows] * inv_temperature, accumulate=True)
    return g


def _torch_forward(logits_N_V, targets_N, temperature):
    N, V = logits_N_V.shape
    rows = max(1, min(N, dispatch.CHUNK_ELEMENTS // V))
    z_buf = torch.empty(rows, V, dtype=torch.float32, device=logits_N_V.device)
    work = torch.empty_like(z_buf)
    out = torch.empty(3, N, dtype=torch.float32, device=logits_N_V.device)  # logprob, entropy, lse
    for r0 in range(0, N, rows):
        n = min(rows, N - r0)
        z = z_buf[:n].copy_(logits_N_V[r0 : r0 + n])
        if temperature != 1.0:
            z.mul_(1.0 / temperature)
        lp, ent, lse = rows_forward_(z, targets_N[r0 : r0 + n], work[:n])
        out[0, r0 : r0 + n], out[1, r0 : r0 + n], out[2, r0 : r0 + n] = lp, ent, lse
    return out[0], out[1], out[2]


def _torch_backward(logits_N_V, targets_N, temperature, lse_N, entropy_N, dlogprobs_N, dentropy_N):
    N, V = logits_N_V.shape
    grad_N_V = torch.empty_like(logits_N_V)
    rows = max(1, min(N, dispatch.CHUNK_ELEMENTS // V))
    fp32 = logits_N_V.dtype == torch.float32
    z_buf = None if fp32 else torch.empty(rows, V, dtype=torch.float32, device=logits_N_V.device)
    work = torch.empty(rows, V, dtype=torch.float32, device=logits_N_V.device)
    for r0 in range(0, N, rows):
        n, sl = min(rows, N - r0), slice(r0, r0 + min(rows, N - r0))
        # fp32: compute in place in the gradient's own rows, no extra buffer
        z = grad_N_V[sl].copy_(logits_N_V[sl]) if fp32 else z_buf[:n].copy_(logits_N_V[sl])
        if temperature != 1.0:
            z.mul_(1.0 / temperature)
        g = rows_grad_(
            z, work[:n], lse_N[sl], entropy_N[sl],
            None if dlogprobs_N is None else dlogprobs_N[sl],
            None if dentropy_N is None else dentropy_N[sl],
            targets_N[sl], 0, 1.0 / temperature, finite=False,
        )  # fmt: skip
        if not fp32:
            grad_N_V[sl].copy_(g)
    return grad_N_V


# ----------------------------------------------------------------------------- Triton kernels


@triton.jit
def online_update(m, s, t, z):
    """One step of the online (max, sum exp, sum exp * shifted z) over a [rows, cols] fp32 tile.

    m, s, t are [rows]. Padding columns must hold -inf. m starts at -1e30 (not -inf) so the first
    rescale is exp(-huge) = 0 rather than nan; shifted values are floored at -1e30 so that a -inf
    (padding, masked vocabulary) contributes exp(-1e30) * -1e30 = 0 to t, not 0 * -inf.
    """
    m_new = tl.maximum(m, tl.max(z, axis=1))
    alpha = tl.exp(m - m_new)
    shifted = tl.maximum(z - m_new[:, None], -1e30)
    e = tl.exp(shifted)
    t = alpha * (t + (m - m_new) * s) + tl.sum(e * shifted, axis=1)
    s = alpha * s + tl.sum(e, axis=1)
    return m_new, s, t


@triton.jit
def logit_grad(z, lse, a, c):
    """p * (a log p + c) for an fp32 tile z = logits / T, with per-row [rows] lse, a = -dentropy and
    c = -(dlogprob + dentropy * entropy): the gradient w.r.t. z, less dlogprob at the target."""
    logp = tl.maximum(z - lse[:, None], -1e30)  # finite for -inf logits: p * log p is then 0, not nan
    return tl.exp(logp) * (a[:, None] * logp + c[:, None])


@triton.jit
def _logits_fwd_kernel(
    logits_ptr, targets_ptr, out_ptr, N, V, stride_n, inv_temperature,
    BLOCK_N: tl.constexpr, BLOCK_V: tl.constexpr,
):  # fmt: skip
    rows = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    row_ok = rows < N
    row_ptrs = logits_ptr + rows.to(tl.int64)[:, None] * stride_n
    m = tl.full([BLOCK_N], -1e30, tl.float32)
    s = tl.zeros([BLOCK_N], tl.float32)
    t = tl.zeros([BLOCK_N], tl.float32)
    for v0 in range(0, V, BLOCK_V):
        cols = v0 + tl.arange(0, BLOCK_V)
        z = tl.load(row_ptrs + cols[None, :], mask=row_ok[:, None] & (cols < V)[None, :], other=float("-inf"))
        m, s, t = online_update(m, s, t, z.to(tl.float32) * inv_temperature)
    targets = tl.load(targets_ptr + rows, mask=row_ok, other=0)
    zt = tl.load(logits_ptr + rows.to(tl.int64) * stride_n + targets, mask=row_ok, other=0.0).to(tl.float32)
    s = tl.where(row_ok, s, 1.0)  # padding rows saw nothing; keep log() finite
    log_s = tl.log(s)
    tl.store(out_ptr + rows, zt * inv_temperature - m - log_s, mask=row_ok)  # logprob
    tl.store(out_ptr + N + rows, log_s - t / s, mask=row_ok)  # entropy
    tl.store(out_ptr + 2 * N + rows, m + log_s, mask=row_ok)  # lse


@triton.jit
def _logits_bwd_kernel(
    logits_ptr, grad_ptr, targets_ptr, lse_ptr, a_ptr, c_ptr, dlp_ptr,
    N, V, stride_n, stride_gn, inv_temperature,
    BLOCK_N: tl.constexpr, BLOCK_V: tl.constexpr,
):  # fmt: skip
    rows = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    row_ok = rows < N
    targets = tl.load(targets_ptr + rows, mask=row_ok, other=0)
    lse = tl.load(lse_ptr + rows, mask=row_ok, other=0.0)
    a = tl.load(a_ptr + rows, mask=row_ok, other=0.0) * inv_temperature
    c = tl.load(c_ptr + rows, mask=row_ok, other=0.0) * inv_temperature
    dlp = tl.load(dlp_ptr + rows, mask=row_ok, other=0.0) * inv_temperature
    for v0 in range(0, V, BLOCK_V):
        cols = v0 + tl.arange(0, BLOCK_V)
        valid = row_ok[:, None] & (cols < V)[None, :]
        z = tl.load(logits_ptr + rows.to(tl.int64)[:, None] * stride_n + cols[None, :], mask=valid, other=0.0)
        g = logit_grad(z.to(tl.float32) * inv_temperature, lse, a, c)
        g += tl.where(cols[None, :] == targets[:, None], dlp[:, None], 0.0)
        g_ptrs = grad_ptr + rows.to(tl.int64)[:, None] * stride_gn + cols[None, :]
        tl.store(g_ptrs, g.to(grad_ptr.dtype.element_ty), mask=valid)


def _launch_config(V: int) -> tuple[int, int]:
    """(BLOCK_N, BLOCK_V): a few rows per program so short vocabularies still fill a tile."""
    block_v = min(4096, next_power_of_2(V))
    return max(1, min(16, 4096 // block_v)), block_v


def _triton_forward(logits_N_V, targets_N, temperature):
    N, V = logits_N_V.shape
    out = torch.empty(3, N, dtype=torch.float32, device=logits_N_V.device)
    block_n, block_v = _launch_config(V)
    _logits_fwd_kernel[(triton.cdiv(N, block_n),)](
        logits_N_V, targets_N, out, N, V, logits_N_V.stride(0), 1.0 / temperature,
        BLOCK_N=block_n, BLOCK_V=block_v,
    )  # fmt: skip
    return out[0], out[1], out[2]


def _triton_backward(logits_N_V, targets_N, temperature, lse_N, entropy_N, dlogprobs_N, dentropy_N):
    """One kernel for either upstream gradient being None: (a, c) absorb it, at one FMA per element."""
    N, V = logits_N_V.shape
    grad_N_V = torch.empty_like(logits_N_V)
    a_N, c_N = grad_coefficients(entropy_N, dlogprobs_N, dentropy_N)
    block_n, block_v = _launch_config(V)
    _logits_bwd_kernel[(triton.cdiv(N, block_n),)](
        logits_N_V, grad_N_V, targets_N, lse_N, a_N.contiguous(), c_N.contiguous(),
        dlogprobs_N if dlogprobs_N is not None else torch.zeros_like(lse_N),
        N, V, logits_N_V.stride(0), grad_N_V.stride(0), 1.0 / temperature,
        BLOCK_N=block_n, BLOCK_V=block_v,
    )  # fmt: skip
    return grad_N_V


# ----------------------------------------------------------------------------- autograd + public


class LogitsLogprobs(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits_N_V, targets_N, temperature, triton_path):
        impl = _triton_forward if triton_path else _torch_forward
        with no_autocast(logits_N_V):
            logprobs_N, entropy_N, lse_N = impl(logits_N_V, targets_N, temperature)
        ctx.save_for_backward(logits_N_V, targets_N, lse_N, entropy_N)
        ctx.temperature, ctx.triton_path = temperature, triton_path
        ctx.set_materialize_grads(False)  # an unused output's grad stays None: skip its work
        return logprobs_N, entropy_N

    @staticmethod
    def backward(ctx, dlogprobs_N, dentropy_N):
        if not ctx.needs_input_grad[0] or (dlogprobs_N is None and dentropy_N is None):
            return None, None, None, None
        logits_N_V, targets_N, lse_N, entropy_N = ctx.saved_tensors
        impl = _triton_backward if ctx.triton_path else _torch_backward
        dlp = None if dlogprobs_N is None else dlogprobs_N.float().contiguous()
        dent = None if dentropy_N is None else dentropy_N.float().contiguous()
        with no_autocast(logits_N_V):
            grad = impl(logits_N_V, targets_N, ctx.temperature, lse_N, entropy_N, dlp, dent)
        return grad, None, None, None


def logits_logprobs(
    logits_N_V: torch.Tensor,
    targets_N: torch.Tensor,
    temperature: float = 1.0,
    *,
    backend: Backend = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    """log p(target) and entropy of softmax(logits / temperature), both fp32 [N].

    Differentiable w.r.t. the logits through both outputs. Leading dimensions are flattened, so
    [B, T, V] logits with [B, T] targets work and give [B, T] results. targets must lie in [0, V).
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    lead = targets_N.shape
    logits_N_V = logits_N_V.reshape(-1, logits_N_V.shape[-1])
    if logits_N_V.stride(-1) != 1:
        logits_N_V = logits_N_V.contiguous()
    targets_N = targets_N.reshape(-1).long().contiguous()
    if targets_N.shape[0] != logits_N_V.shape[0]:
        raise ValueError(f"{targets_N.shape[0]} targets for {logits_N_V.shape[0]} rows of logits")
    triton_path = use_triton(backend, logits_N_V, targets_N) and targets_N.numel() > 0
    logprobs_N, entropy_N = LogitsLogprobs.apply(logits_N_V, targets_N, float(temperature), triton_path)
    return logprobs_N.view(lead), entropy_N.view(lead)
