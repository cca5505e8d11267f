"""flashattn: exact attention computed the FlashAttention way, on CPU and CUDA.

    from flashattn import flash_attn_func      # drop-in for flash_attn 2.x
    out = flash_attn_func(q, k, v, causal=True)

numpy arrays run on the CPU backend; torch tensors on the backend of their
device, differentiable and torch.compile-able. See docs/python.md.
"""

from . import _flashattn as _C
from ._core import BackwardResult, ForwardResult, backend_available, backend_names, backward, forward
from .interface import (
    attention,
    flash_attn_func,
    flash_attn_kvpacked_func,
    flash_attn_qkvpacked_func,
    flash_attn_varlen_func,
    flash_attn_varlen_kvpacked_func,
    flash_attn_varlen_qkvpacked_func,
)

__version__ = _C.__version__
with_cuda = bool(_C.with_cuda)

__all__ = [
    "__version__",
    "attention",
    "backend_available",
    "backend_names",
    "backward",
    "flash_attn_func",
    "flash_attn_kvpacked_func",
    "flash_attn_qkvpacked_func",
    "flash_attn_varlen_func",
    "flash_attn_varlen_kvpacked_func",
    "flash_attn_varlen_qkvpacked_func",
    "forward",
    "BackwardResult",
    "ForwardResult",
    "with_cuda",
]
