"""seqk: Python bindings (ctypes) for libseqk, the C library of sequence-model
kernels: the scan primitive, linear attention, RetNet retention, gated
retention, Mamba2 (SSD), the Mamba selective scan, DeltaNet and gated DeltaNet,
the Titans linear memory and softmax attention; each
recurrent-state module runs in a recurrent and a parallel mode.

    import numpy as np, seqk
    q = np.random.randn(1, 128, 4, 32).astype(np.float32)
    o = seqk.retention(q, q, q, mode="parallel")

The C library is loaded at import ($SEQK_LIBRARY first; see seqk._lib for the
search order) and must have the same version as this package. The ops take
numpy float32 arrays (or torch tensors, when the caller uses torch); see
seqk.ops for the conventions shared by every op.
"""

from ._version import __version__
from ._lib import library_path  # loads the library; ImportError if none loads
from ._core import (
    ATTN_CAUSAL,
    DELTANET_ALLOW_NEG_EIGVAL,
    DELTANET_L2NORM_QK,
    LINATTN_ELU1,
    LINATTN_NORMALIZE,
    MAMBA2_DT_SOFTPLUS,
    SCAN_REVERSE,
    SSCAN_DT_SOFTPLUS,
    TITANS_L2NORM_QK,
    Backend,
    Context,
    CopyKind,
    Dtype,
    Mode,
    SeqkError,
    Status,
    backend_compiled,
    backends,
    cuda_device_count,
    default_context,
    status_string,
    version,
)
from .ops import (
    attention_decode,
    attention_decode_workspace_size,
    attention_parallel,
    attention_parallel_backward,
    attention_parallel_backward_workspace_size,
    attention_parallel_workspace_size,
    available_ops,
    deltanet,
    deltanet_backward,
    deltanet_backward_workspace_size,
    deltanet_workspace_size,
    gated_retention,
    gated_retention_backward,
    has_op,
    linear_attention,
    linear_attention_backward,
    linear_state_backward_workspace_size,
    linear_state_workspace_size,
    mamba2,
    mamba2_backward,
    retention,
    retention_backward,
    retention_default_gammas,
    chunk_default,
    scan,
    scan_workspace_size,
    selective_scan,
    selective_scan_backward,
    selective_scan_backward_workspace_size,
    titans,
    titans_backward,
    titans_backward_workspace_size,
    titans_state_size,
    titans_workspace_size,
)

from . import _core as _core_module
from . import ops as _ops_module

# the package's names: those of _core and ops (each lists its own once)
__all__ = ["__version__"] + _core_module.__all__ + [n for n in _ops_module.__all__
                                                     if n not in _core_module.__all__]
