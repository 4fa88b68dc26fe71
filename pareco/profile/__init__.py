"""Per-layer latency tables of slimmable networks on a target runtime, and the additive cost model.

    python -m pareco.profile --weights zoo/resnet20-fashionmnist/model.safetensors \
        --threads 1 --out zoo/resnet20-fashionmnist/latency-ort-t1.json

Modules: :mod:`.layers` (which layers a network has), :mod:`.graphs` (one ONNX graph per layer
and channel pair), :mod:`.timing` (interleaved measurement, robust quantile), :mod:`.subnets`
(whole dense subnets for calibration), :mod:`.build` (profiling into a table), :mod:`.table`
(the versioned JSON table and its interpolation), :mod:`.model` (prediction and the search's
normalized cost functions).
"""

from pareco.profile.build import profile_net
from pareco.profile.layers import LayerSpec, trace_layers
from pareco.profile.model import LatencyModel, latency_functions
from pareco.profile.table import LatencyTable, TableError, channel_grid, load_table
from pareco.profile.timing import measure, ort_runners

__all__ = ["LatencyModel", "LatencyTable", "LayerSpec", "TableError", "channel_grid",
           "latency_functions", "load_table", "measure", "ort_runners", "profile_net",
           "trace_layers"]
