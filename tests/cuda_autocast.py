"""CUDA autocast's fp32 list, applied by CPU autocast: CPU tests that claim the GPU path compute what a GPU computes.

Both autocasts run matmuls, linears and convolutions in the low dtype, but CUDA autocast also runs a list of ops in
fp32 (their floating inputs cast up, so their outputs are fp32) that CPU autocast leaves in the input dtype:
``AT_FORALL_FP32`` and ``AT_FORALL_FP32_SET_OPT_DTYPE`` in pytorch ``aten/src/ATen/autocast_mode.h`` (``exp``, ``pow``,
``sum``, ``softmax``, ``cumsum``, ``linalg_vector_norm`` (``F.normalize``), ``layer_norm``, ...). Inside
:func:`cuda_fp32_list`, CPU autocast does the same for those ops (a Python kernel on the ``AutocastCPU`` key).
``tests/test_gpu_path.py`` checks the copy against CUDA's own kernels, which a CPU build also registers, with fake
CUDA tensors (``FakeTensorMode``); a whole model cannot run on fake CUDA tensors in a CPU build (its views need a
CUDA device guard), hence this copy.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import Tensor
from torch.utils import _pytree as pytree

# autocast_mode.h: AT_FORALL_FP32, AT_FORALL_FP32_SET_OPT_DTYPE, the norm overloads, and rms_norm (torch 2.13 has it)
CUDA_FP32_OPS = (
    "acos", "asin", "cosh", "erfinv", "exp", "expm1", "log", "log10", "log2", "log1p", "reciprocal", "rsqrt", "sinh",
    "tan", "pow.Tensor_Scalar", "pow.Tensor_Tensor", "pow.Scalar", "softplus", "layer_norm", "native_layer_norm",
    "group_norm", "frobenius_norm.dim", "nuclear_norm", "nuclear_norm.dim", "cosine_similarity", "poisson_nll_loss",
    "cosine_embedding_loss", "nll_loss", "nll_loss2d", "hinge_embedding_loss", "kl_div", "l1_loss", "smooth_l1_loss",
    "huber_loss", "mse_loss", "margin_ranking_loss", "multilabel_margin_loss", "soft_margin_loss",
    "triplet_margin_loss", "multi_margin_loss", "binary_cross_entropy_with_logits", "dist", "pdist", "cdist",
    "renorm", "logsumexp", "prod", "prod.dim_int", "softmax.int", "log_softmax.int", "cumprod", "cumsum",
    "linalg_vector_norm", "linalg_matrix_norm", "linalg_matrix_norm.str_ord", "sum", "sum.dim_IntList",
    "norm.Scalar", "norm.ScalarOpt_dim", "rms_norm",
)  # fmt: skip


def _in_fp32(op):
    def kernel(*args, **kwargs):
        args, kwargs = pytree.tree_map_only(
            Tensor, lambda t: t.float() if t.is_floating_point() and t.dtype != torch.float64 else t, (args, kwargs)
        )
        with torch._C._ExcludeDispatchKeyGuard(torch._C.DispatchKeySet(torch._C.DispatchKey.AutocastCPU)):
            return op(*args, **kwargs)

    return kernel


@contextlib.contextmanager
def cuda_fp32_list() -> Iterator[list[str]]:
    """Within: CPU autocast runs CUDA autocast's fp32 ops in fp32; yields the ops it took over (those CPU autocast
    has no kernel for: the others it already runs in fp32)."""
    lib = torch.library.Library("aten", "IMPL")
    taken = []
    try:
        for name in CUDA_FP32_OPS:
            qualified = f"aten::{name}"
            if torch._C._dispatch_has_kernel_for_dispatch_key(qualified, "AutocastCPU"):
                continue
            base, _, overload = name.partition(".")
            lib.impl(name, _in_fp32(getattr(getattr(torch.ops.aten, base), overload or "default")), "AutocastCPU")
            taken.append(name)
        yield taken
    finally:
        lib._destroy()
