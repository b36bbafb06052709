"""Fused LM head + selective log-softmax + entropy, never holding the [N, V] logits.

    logprobs_N, entropy_N = linear_logprobs(hidden_N_H, weight_V_H, targets_N, temperature=1.0)

computes log p(target) and H(p) for p = softmax(hidden @ weight.T / T), differentiable w.r.t. hidden
and weight through both outputs. At Qwen's V = 151,936 the naive path's fp32 logits alone are 2.5 GB
for 4,096 tokens, and log_softmax, softmax and the entropy product keep three more such tensors for
backward: the first cause of learner OOMs (TRL #3678, OpenRLHF PR #718, Liger PR #953). The same
problem and the same cure (tile the vocabulary, keep the per-token logsumexp) are in Liger-Kernel's
fused linear cross-entropy and verl's `efficient_entropy`; the row math is in `logits_logprobs`.

Forward keeps only lse and entropy per token ([N] each). Backward recomputes each logits tile from
hidden and weight (one extra [N, H] x [H, V] matmul: 4 instead of the naive 3, the price of not
storing [N, V]) and turns it straight into its gradient, with z = hidden @ weight.T / T:
    dz = dlogprob * (onehot(target) - p) - dentropy * p * (log p + entropy)
    d hidden = dz @ weight / T,   d weight = dz.T @ hidden / T
Tiling:
  * torch (CPU): vocabulary chunks for all rows at once (rows tiled too if N is large), so the
    matmuls are large. Forward merges the chunks' statistics with an online logsumexp, as the
    kernel merges its splits; backward writes each weight-gradient slice once and accumulates only
    the small [N, H] hidden gradient.
  * Triton: forward is one kernel, tl.dot tiles of the logits folded into an online logsumexp; the
    vocabulary is split over a second grid axis for occupancy and the per-split partial statistics
    (max, sum exp, sum exp * shifted z, target logit) are merged in torch ([splits, N], tiny).
    Backward writes dz for one vocabulary chunk at a time from a kernel that recomputes the logits
    tile, then cuBLAS does the two gradient matmuls for that chunk.
Deviation from the naive path: the matmul runs in the input dtype (bf16 stays bf16, fp32 follows
torch's TF32 setting), everything after it in fp32.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from rlvr.kernels import dispatch
from rlvr.kernels.dispatch import Backend, no_autocast, use_triton
from rlvr.kernels.selective_log_softmax import (
    grad_coefficients,
    logit_grad,
    logits_logprobs_reference,
    online_update,
    rows_grad_,
    tile_stats_,
)


def linear_logprobs_reference(
    hidden_N_H: torch.Tensor, weight_V_H: torch.Tensor, targets_N: torch.Tensor, temperature: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """The definition, in fp32 autograd torch (materialises the [N, V] logits)."""
    return logits_logprobs_reference(hidden_N_H.float() @ weight_V_H.float().T, targets_N, temperature)


# ----------------------------------------------------------------------------- torch chunked path


def _logits_into(out_n_v: torch.Tensor, hidden_n_H: torch.Tensor, weight_v_H: torch.Tensor, temperature):
    """fp32 out = hidden @ weight.T / T, computed in the inputs' dtype."""
    if hidden_n_H.dtype == torch.float32:
        torch.mm(hidden_n_H, weight_v_H.T, out=out_n_v)
    else:
        out_n_v.copy_(hidden_n_H @ weight_v_H.T)
    if temperature != 1.0:
        out_n_v.mul_(1.0 / temperature)
    return out_n_v


def _mm_into(out: torch.Tensor, a: torch.Tensor, b: torch.Tensor, accumulate: bool) -> None:
    """out = a @ b or out += a @ b, for fp32 out: fp32 operands write into it with no temporary."""
    if a.dtype == torch.float32 and accumulate:
        out.addmm_(a, b)
    elif a.dtype == torch.float32:
        torch.mm(a, b, out=out)
    elif accumulate:
        out += a @ b
    else:
        out.copy_(a @ b)


def _chunks(N: int, V: int):
    """(cols, rows) of the torch path's tiles: whole vocabulary chunks of at least MIN_CHUNK_COLS
    columns for all rows when that fits the budget (large matmuls run ~1.5x faster per flop on CPU
    than [~100, H] x [H, V] ones), else rows tiled too."""
    cols = max(1, min(V, max(dispatch.CHUNK_ELEMENTS // max(N, 1), dispatch.MIN_CHUNK_COLS)))
    return cols, max(1, min(N, dispatch.CHUNK_ELEMENTS // cols))


def _torch_forward(hidden_N_H, weight_V_H, targets_N, temperature):
    """Online logsumexp over vocabulary chunks, the same merge as the Triton kernel's splits."""
    (N, H), V = hidden_N_H.shape, weight_V_H.shape[0]
    cols, rows = _chunks(N, V)
    z_buf = torch.empty(rows * cols, dtype=torch.float32, device=hidden_N_H.device)
    work = torch.empty_like(z_buf)
    # running max (finite start: exp(start - max) is 0, not nan), sum exp, sum exp * (z - max), target z
    m_N = torch.full((N,), -1e30, dtype=torch.float32, device=hidden_N_H.device)
    s_N, t_N, zt_N = torch.zeros(3, N, dtype=torch.float32, device=hidden_N_H.device)
    for c0 in range(0, V, cols):
        v = min(cols, V - c0)
        for r0 in range(0, N, rows):
            n, sl = min(rows, N - r0), slice(r0, r0 + min(rows, N - r0))
            z = _logits_into(z_buf[: n * v].view(n, v), hidden_N_H[sl], weight_V_H[c0 : c0 + v], temperature)
            local = targets_N[sl] - c0
            hit = ((local >= 0) & (local < v)).nonzero().squeeze(1)
            zt_N[sl][hit] = z[hit, local[hit]]
            mc, sc, tc = tile_stats_(z, work[: n * v].view(n, v))
            m, s, t = m_N[sl], s_N[sl], t_N[sl]
            m_new = torch.maximum(m, mc)
            a, b = torch.exp(m - m_new), torch.exp(mc - m_new)
            t.copy_(a * (t + (m - m_new) * s) + b * (tc + (mc - m_new) * sc))
            s.copy_(a * s + b * sc)
            m.copy_(m_new)
    log_s = s_N.log()
    lse_N = m_N + log_s
    return zt_N - lse_N, log_s - t_N / s_N, lse_N


def _torch_backward(hidden_N_H, weight_V_H, targets_N, temperature, lse_N, entropy_N, dlp_N, dent_N, need):
    (N, H), V, dtype = hidden_N_H.shape, weight_V_H.shape[0], hidden_N_H.dtype
    fp32, (need_hidden, need_weight) = dtype == torch.float32, need
    if N == 0:  # no row tile would write the weight gradient
        return torch.zeros_like(hidden_N_H) if need_hidden else None, torch.zeros_like(weight_V_H) if need_weight else None
    cols, rows = _chunks(N, V)
    # flat buffers, so that every [n, v] view of them is contiguous (matmul out= wants that)
    z_buf = torch.empty(rows * cols, dtype=torch.float32, device=hidden_N_H.device)
    work = torch.empty_like(z_buf)
    grad_h = torch.zeros(N, H, dtype=torch.float32, device=hidden_N_H.device) if need_hidden else None
    grad_w = torch.empty_like(weight_V_H) if need_weight else None
    # fp32 with all rows in one tile: matmul straight into grad_w; else accumulate a slice in fp32
    direct = fp32 and rows == N
    gw_acc = None if direct or not need_weight else torch.empty(cols * H, dtype=torch.float32, device=z_buf.device)
    for c0 in range(0, V, cols):
        v = min(cols, V - c0)
        weight_v_H = weight_V_H[c0 : c0 + v]
        if need_weight:
            gw_v_H = grad_w[c0 : c0 + v] if direct else gw_acc[: v * H].view(v, H)
        for r0 in range(0, N, rows):
            n, sl = min(rows, N - r0), slice(r0, r0 + min(rows, N - r0))
            z = _logits_into(z_buf[: n * v].view(n, v), hidden_N_H[sl], weight_v_H, temperature)
            g = rows_grad_(
                z, work[: n * v].view(n, v), lse_N[sl], entropy_N[sl],
                None if dlp_N is None else dlp_N[sl], None if dent_N is None else dent_N[sl],
                targets_N[sl], c0, 1.0 / temperature, finite=True,
            )  # fmt: skip
            g = g if fp32 else g.to(dtype)  # the matmuls run in the input dtype, like autograd's
            if need_hidden:
                _mm_into(grad_h[sl], g, weight_v_H, accumulate=True)
            if need_weight:
                _mm_into(gw_v_H, g.T, hidden_N_H[sl], accumulate=r0 > 0)
        if need_weight and not direct:
            grad_w[c0 : c0 + v] = gw_v_H
    return (None if grad_h is None else grad_h.to(dtype)), grad_w


# ----------------------------------------------------------------------------- Triton kernels


@triton.jit
def _logits_tile(
    h_ptr, w_ptr, rows, cols, row_ok, col_ok, H, stride_hn, stride_wv,
    BLOCK_N: tl.constexpr, BLOCK_V: tl.constexpr, BLOCK_H: tl.constexpr, PRECISION: tl.constexpr,
    DOT_FP32: tl.constexpr,
):  # fmt: skip
    """fp32 [BLOCK_N, BLOCK_V] tile of hidden @ weight.T (zeros outside the valid rows/cols).

    DOT_FP32 upcasts the operands first: the Triton interpreter multiplies bf16 bit patterns as
    integers in tl.dot (triton-lang/triton#11584, "not supported yet"). bf16 products are exact in
    fp32, so this changes nothing but speed; it is only set on CPU tensors.
    """
    acc = tl.zeros([BLOCK_N, BLOCK_V], dtype=tl.float32)
    h_rows = h_ptr + rows.to(tl.int64)[:, None] * stride_hn
    w_cols = w_ptr + cols.to(tl.int64)[None, :] * stride_wv
    for k0 in range(0, H, BLOCK_H):
        ks = k0 + tl.arange(0, BLOCK_H)
        k_ok = ks < H
        a = tl.load(h_rows + ks[None, :], mask=row_ok[:, None] & k_ok[None, :], other=0.0)
        b = tl.load(w_cols + ks[:, None], mask=k_ok[:, None] & col_ok[None, :], other=0.0)  # weight.T tile
        if DOT_FP32:
            a, b = a.to(tl.float32), b.to(tl.float32)
        acc = tl.dot(a, b, acc, input_precision=PRECISION)
    return acc


@triton.jit
def _linear_fwd_kernel(
    h_ptr, w_ptr, part_ptr, N, V, H, stride_hn, stride_wv, inv_temperature, tiles_per_split,
    BLOCK_N: tl.constexpr, BLOCK_V: tl.constexpr, BLOCK_H: tl.constexpr, PRECISION: tl.constexpr,
    DOT_FP32: tl.constexpr,
):  # fmt: skip
    """Online (max, sum exp, sum exp * shifted z) of z = hidden @ weight.T / T over this split's tiles.

    The target logit is not picked here (a [rows, cols] compare-and-select per tile costs registers
    the matmul needs); the wrapper takes it as a row dot product hidden . weight[target].
    """
    split, n_splits = tl.program_id(1), tl.num_programs(1)
    rows = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    row_ok = rows < N
    m = tl.full([BLOCK_N], -1e30, tl.float32)
    s = tl.zeros([BLOCK_N], tl.float32)
    t = tl.zeros([BLOCK_N], tl.float32)
    first = split * tiles_per_split
    n_tiles = tl.minimum(tiles_per_split, tl.cdiv(V, BLOCK_V) - first)
    for i in range(0, n_tiles):
        cols = (first + i) * BLOCK_V + tl.arange(0, BLOCK_V)
        col_ok = cols < V
        z = _logits_tile(
            h_ptr, w_ptr, rows, cols, row_ok, col_ok, H, stride_hn, stride_wv, BLOCK_N, BLOCK_V, BLOCK_H, PRECISION, DOT_FP32
        )
        padding = tl.where(col_ok, 0.0, float("-inf"))  # [cols]: padding rows need no mask, they are not stored
        m, s, t = online_update(m, s, t, z * inv_temperature + padding[None, :])
    base = part_ptr + split * N + rows  # part is [3, splits, N]
    tl.store(base, m, mask=row_ok)
    tl.store(base + n_splits * N, s, mask=row_ok)
    tl.store(base + 2 * n_splits * N, t, mask=row_ok)


@triton.jit
def _linear_bwd_kernel(
    h_ptr, w_ptr, lse_ptr, a_ptr, c_ptr, dz_ptr, N, V_end, H, c0, stride_hn, stride_wv, stride_dzn, inv_temperature,
    BLOCK_N: tl.constexpr, BLOCK_V: tl.constexpr, BLOCK_H: tl.constexpr, PRECISION: tl.constexpr,
    DOT_FP32: tl.constexpr,
):  # fmt: skip
    """dz for vocabulary columns [c0, V_end), stored at dz[:, col - c0]; a and c come divided by T,
    and the target's dlogprob / T is added by the wrapper."""
    rows = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    cols = c0 + tl.program_id(1) * BLOCK_V + tl.arange(0, BLOCK_V)
    row_ok, col_ok = rows < N, cols < V_end
    lse = tl.load(lse_ptr + rows, mask=row_ok, other=0.0)
    a = tl.load(a_ptr + rows, mask=row_ok, other=0.0)
    c = tl.load(c_ptr + rows, mask=row_ok, other=0.0)
    z = _logits_tile(
        h_ptr, w_ptr, rows, cols, row_ok, col_ok, H, stride_hn, stride_wv, BLOCK_N, BLOCK_V, BLOCK_H, PRECISION, DOT_FP32
    )
    g = logit_grad(z * inv_temperature, lse, a, c)
    ptrs = dz_ptr + rows.to(tl.int64)[:, None] * stride_dzn + (cols - c0)[None, :]
    tl.store(ptrs, g.to(dz_ptr.dtype.element_ty), mask=row_ok[:, None] & col_ok[None, :])


def launch_config(dtype: torch.dtype, on_gpu: bool) -> dict:
    """Tiles of both kernels; untuned starting points, not yet timed on a GPU.

    On the GPU, 64 x 128 logits tiles over 8 warps with K steps of 64 (bf16) or 16 (fp32) are the
    largest of the tiles we compiled for sm_80 and sm_90 (tests/kernels/test_compile.py) whose
    online-softmax and gradient epilogues fit in registers without spilling; 128-row tiles spill.
    The interpreter runs every program in Python: small tiles keep the CPU tests quick.
    """
    if not on_gpu:
        return dict(BLOCK_N=16, BLOCK_V=16, BLOCK_H=16, DOT_FP32=True)
    block_h = 64 if dtype in (torch.bfloat16, torch.float16) else 16
    return dict(BLOCK_N=64, BLOCK_V=128, BLOCK_H=block_h, DOT_FP32=False, num_warps=8, num_stages=3)


def _precision(hidden: torch.Tensor) -> str:
    # fp32 inputs follow torch's own matmul setting, so the kernel is as exact as the naive path.
    if hidden.dtype == torch.float32 and not torch.backends.cuda.matmul.allow_tf32:
        return "ieee"
    return "tf32"  # Triton's default; ignored for bf16/fp16 inputs


def _triton_forward(hidden_N_H, weight_V_H, targets_N, temperature):
    (N, H), V = hidden_N_H.shape, weight_V_H.shape[0]
    cfg = launch_config(hidden_N_H.dtype, hidden_N_H.is_cuda)
    row_blocks, tiles = triton.cdiv(N, cfg["BLOCK_N"]), triton.cdiv(V, cfg["BLOCK_V"])
    # Enough programs to fill the GPU ~4 times over; the interpreter gets 2 splits so the merge is tested.
    programs = 4 * torch.cuda.get_device_properties(hidden_N_H.device).multi_processor_count if hidden_N_H.is_cuda else 2
    tiles_per_split = triton.cdiv(tiles, min(tiles, max(1, triton.cdiv(programs, row_blocks))))
    splits = triton.cdiv(tiles, tiles_per_split)
    part = torch.empty(3, splits, N, dtype=torch.float32, device=hidden_N_H.device)
    _linear_fwd_kernel[(row_blocks, splits)](
        hidden_N_H, weight_V_H, part, N, V, H, hidden_N_H.stride(0), weight_V_H.stride(0),
        1.0 / temperature, tiles_per_split, PRECISION=_precision(hidden_N_H), **cfg,
    )  # fmt: skip
    m, s, t = part.unbind(0)  # merge the splits, as online_update merges tiles
    m_N = m.amax(0)
    w = torch.exp(m - m_N)
    s_N = (w * s).sum(0)
    t_N = (w * (t + (m - m_N) * s)).sum(0)
    log_s = s_N.log()
    lse_N = m_N + log_s
    zt_N = torch.einsum("nh,nh->n", hidden_N_H.float(), weight_V_H[targets_N].float()) / temperature
    return zt_N - lse_N, log_s - t_N / s_N, lse_N


def _triton_backward(hidden_N_H, weight_V_H, targets_N, temperature, lse_N, entropy_N, dlp_N, dent_N, need):
    """One kernel whichever upstream gradient is None: (a, c) absorb it, at one FMA per element."""
    (N, H), V, dtype = hidden_N_H.shape, weight_V_H.shape[0], hidden_N_H.dtype
    need_hidden, need_weight = need
    cfg = launch_config(hidden_N_H.dtype, hidden_N_H.is_cuda)
    cols = max(dispatch.CHUNK_ELEMENTS // N // cfg["BLOCK_V"], 1) * cfg["BLOCK_V"]
    dz = torch.empty(N, min(cols, V), dtype=dtype, device=hidden_N_H.device)
    a_N, c_N = (x / temperature for x in grad_coefficients(entropy_N, dlp_N, dent_N))
    grad_h = torch.zeros(N, H, dtype=torch.float32, device=hidden_N_H.device) if need_hidden else None
    grad_w = torch.empty_like(weight_V_H) if need_weight else None
    for c0 in range(0, V, cols):
        v = min(cols, V - c0)
        _linear_bwd_kernel[(triton.cdiv(N, cfg["BLOCK_N"]), triton.cdiv(v, cfg["BLOCK_V"]))](
            hidden_N_H, weight_V_H, lse_N, a_N, c_N, dz, N, c0 + v, H, c0,
            hidden_N_H.stride(0), weight_V_H.stride(0), dz.stride(0), 1.0 / temperature,
            PRECISION=_precision(hidden_N_H), **cfg,
        )  # fmt: skip
        dz_v = dz[:, :v]
        if dlp_N is not None:  # + dlogprob / T at each target inside this chunk
            local = targets_N - c0
            hit = ((local >= 0) & (local < v)).nonzero().squeeze(1)
            dz_v.index_put_((hit, local[hit]), (dlp_N[hit] / temperature).to(dtype), accumulate=True)
        if need_hidden:
            grad_h += dz_v @ weight_V_H[c0 : c0 + v]
        if need_weight:
            torch.mm(dz_v.T, hidden_N_H, out=grad_w[c0 : c0 + v])
    return (None if grad_h is None else grad_h.to(dtype)), grad_w


# ----------------------------------------------------------------------------- autograd + public


class LinearLogprobs(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden_N_H, weight_V_H, targets_N, temperature, triton_path):
        impl = _triton_forward if triton_path else _torch_forward
        with no_autocast(hidden_N_H):
            logprobs_N, entropy_N, lse_N = impl(hidden_N_H, weight_V_H, targets_N, temperature)
        ctx.save_for_backward(hidden_N_H, weight_V_H, targets_N, lse_N, entropy_N)
        ctx.temperature, ctx.triton_path = temperature, triton_path
        ctx.set_materialize_grads(False)  # an unused output's grad stays None: skip its work
        return logprobs_N, entropy_N

    @staticmethod
    def backward(ctx, dlogprobs_N, dentropy_N):
        need = (ctx.needs_input_grad[0], ctx.needs_input_grad[1])
        if not any(need) or (dlogprobs_N is None and dentropy_N is None):
            return None, None, None, None, None
        hidden_N_H, weight_V_H, targets_N, lse_N, entropy_N = ctx.saved_tensors
        impl = _triton_backward if ctx.triton_path else _torch_backward
        dlp = None if dlogprobs_N is None else dlogprobs_N.float().contiguous()
        dent = None if dentropy_N is None else dentropy_N.float().contiguous()
        with no_autocast(hidden_N_H):
            grad_h, grad_w = impl(hidden_N_H, weight_V_H, targets_N, ctx.temperature, lse_N, entropy_N, dlp, dent, need)
        return grad_h, grad_w, None, None, None


def linear_logprobs(
    hidden_N_H: torch.Tensor,
    weight_V_H: torch.Tensor,
    targets_N: torch.Tensor,
    temperature: float = 1.0,
    *,
    backend: Backend = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    """log p(target) and entropy of softmax(hidden @ weight.T / temperature), both fp32 [N].

    Differentiable w.r.t. hidden and weight through both outputs; never holds [N, V]. Leading
    dimensions of hidden are flattened ([B, T, H] with [B, T] targets gives [B, T] results).
    hidden and weight must share a dtype; targets must lie in [0, V).
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if hidden_N_H.dtype != weight_V_H.dtype:
        raise TypeError(f"hidden is {hidden_N_H.dtype} but weight is {weight_V_H.dtype}")
    lead = targets_N.shape
    hidden_N_H = hidden_N_H.reshape(-1, hidden_N_H.shape[-1]).contiguous()
    weight_V_H = weight_V_H.contiguous()
    targets_N = targets_N.reshape(-1).long().contiguous()
    if targets_N.shape[0] != hidden_N_H.shape[0]:
        raise ValueError(f"{targets_N.shape[0]} targets for {hidden_N_H.shape[0]} rows of hidden states")
    triton_path = use_triton(backend, hidden_N_H, weight_V_H, targets_N) and targets_N.numel() > 0
    lp, ent = LinearLogprobs.apply(hidden_N_H, weight_V_H, targets_N, float(temperature), triton_path)
    return lp.view(lead), ent.view(lead)
