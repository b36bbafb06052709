"""The Triton kernels compile for real GPUs (sm_80, sm_90) without spilling registers, no GPU needed.

The interpreter runs the kernels' Python, not the compiler: a kernel can pass every CPU test and
still fail to compile, or spill its tiles to local memory. Triton's wheel carries ptxas and
cuobjdump, so this compiles each kernel with the launch configurations the wrappers use, in a
subprocess without TRITON_INTERPRET, and reads each cubin's resource usage.
"""

import json
import os
import subprocess
import sys

import pytest

SCRIPT = r"""
import importlib, json, os, subprocess, sys, tempfile
import torch, triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

lin = importlib.import_module("rlvr.kernels.fused_linear")
lg = importlib.import_module("rlvr.kernels.selective_log_softmax")
fl = importlib.import_module("rlvr.kernels.fused_loss")
BIN = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin")
FLOATS = {"inv_temperature", "clip_lo", "clip_hi", "dual_c", "kl_coef", "ent_coef", "is_cap", "is_low", "is_high",
          "norm_length", "clamp"}
INPUT_DTYPE = {"h_ptr", "w_ptr", "dz_ptr", "logits_ptr", "grad_ptr"}
TY = {torch.bfloat16: "bf16", torch.float32: "fp32"}


def signature(fn, dtype):
    sig = {}
    for p in fn.params:
        if p.is_constexpr:
            sig[p.name] = "constexpr"
        elif p.name.endswith("_ptr"):
            sig[p.name] = ("*i64" if p.name == "targets_ptr" else "*i8" if p.name == "mask_ptr"
                           else f"*{TY[dtype]}" if p.name in INPUT_DTYPE else "*fp32")
        else:
            sig[p.name] = "fp32" if p.name in FLOATS else "i32"
    return sig


def usage(fn, dtype, consts, arch, **options):
    src = ASTSource(fn=fn, signature=signature(fn, dtype), constexprs=consts)
    kernel = triton.compile(src, target=GPUTarget("cuda", arch, 32), options=options)
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(kernel.asm["cubin"])
        f.flush()
        out = subprocess.run([os.path.join(BIN, "cuobjdump"), "-res-usage", f.name], capture_output=True, text=True)
    fields = dict(kv.split(":") for kv in next(l for l in out.stdout.splitlines() if "REG:" in l).split())
    return {"regs": int(fields["REG"]), "stack": int(fields["STACK"])}


results = {}
for arch in (80, 90):
    for dtype in (torch.bfloat16, torch.float32):
        cfg = lin.launch_config(dtype, on_gpu=True)
        opts = {k: cfg.pop(k) for k in ("num_warps", "num_stages")}
        cfg["PRECISION"] = "ieee" if dtype == torch.float32 else "tf32"
        for fn in (lin._linear_fwd_kernel, lin._linear_bwd_kernel):
            results[f"sm{arch} {fn.__name__} {TY[dtype]}"] = usage(fn, dtype, cfg, arch, **opts)
        block_n, block_v = lg._launch_config(151936)
        for fn in (lg._logits_fwd_kernel, lg._logits_bwd_kernel):
            results[f"sm{arch} {fn.__name__} {TY[dtype]}"] = usage(fn, dtype, dict(BLOCK_N=block_n, BLOCK_V=block_v), arch)
    # The fused loss at its heaviest: every term on, one case per policy (each a different code path).
    for policy, code in fl.POLICY_CODES.items():
        consts = dict(POLICY=code, DUAL_CLIP=code < 2, HAS_REF=True, KL_TERM=True, KL_EST=code, HAS_ENT=True,
                      ENT_TERM=True, MISMATCH=1 + code, HAS_W=True, AGG=code % 3, NSTAT_=fl.NSTAT, BLOCK_T=fl.MAX_BLOCK_T)
        results[f"sm{arch} _loss_kernel {policy}"] = usage(fl._loss_kernel, torch.float32, consts, arch)
print(json.dumps(results))
"""


@pytest.mark.slow
def test_kernels_compile_without_spills():
    import triton

    if not os.path.exists(os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")):
        pytest.skip("this triton wheel carries no CUDA toolchain")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"} | {"TRITON_DEFAULT_FP_FUSION": "1"}
    proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    spilled = {name: r for name, r in results.items() if r["stack"] > 0}
    assert not spilled, f"kernels using local memory (register spills): {spilled}"
    assert len(results) == 2 * (2 * 4 + 4)
