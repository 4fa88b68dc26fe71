"""Export front configurations of a PareCO weight file to deployable, verified files.

``python -m export`` (see :mod:`export.__main__`) writes, per chosen configuration, a dense
ONNX model with batch norm folded into the convolutions (:mod:`export.onnx_io`), optionally its
ORT-format twin for mobile runtimes (:mod:`export.mobile`) and a static int8 QDQ model
(:mod:`export.quantize`), and a ``manifest.json`` (:mod:`export.manifest`).

Every file is checked before it is kept (:mod:`export.pipeline`):

- ONNX Runtime reproduces PyTorch within 1e-4 (max abs logit difference) at batch 1 and batch 8
  (:mod:`export.parity`), on test-split images when the dataset is found, else random ones;
- MACs counted from the ONNX graph (:mod:`export.count`, Conv/Gemm/MatMul through ONNX shape
  inference) equal the front's MACs exactly;
- parameters: the extracted subnet has exactly the front's ``params`` (weights, biases, BN
  affine); the ONNX graph has exactly the BN-folded subnet's parameters. Folding replaces each
  BN's ``2*C`` affine parameters with a ``C``-element conv bias, so for the zoo's bias-less
  convolutions ``onnx_params = params - sum(C over BN layers)``; all-zero biases, which the
  exporter's optimizer drops, are left out on both sides.

Every written file is stripped of the exporter's per-node metadata (stack traces with build-machine
paths), carries the lowest IR version its opset allows and describes itself in
``metadata_props`` (input layout, preprocessing, class names: :mod:`export.tidy`).

``export.onnx_io.to_onnx`` is the in-memory entry point used by the server.
"""
