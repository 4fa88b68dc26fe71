"""ONNX Runtime CPU session options shared by the server (:mod:`serve.runners`) and the latency
profiler (:mod:`pareco.profile.timing`), so that a profiled latency is the one the server sees.
Imports neither torch nor anything heavy: the server's start from its cache stays torch-free."""

from __future__ import annotations

from typing import Any


def ort_session_options(threads: int) -> Any:
    """``onnxruntime.SessionOptions``: ``threads`` intra-op threads, sequential execution, all
    graph optimizations, and idle pool threads that do not spin (several sessions run at once:
    one per configuration in the server)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return opts
