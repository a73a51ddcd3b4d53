"""INT8 models made from calibration samples, each a content-cache entry.

- `common`: what every quantizer shares: the exclusion list, the cache key, the entry's
  metadata (calibration seconds, samples, fingerprint) and the calibration feed.
- `ort_qdq`: ONNX Runtime's static quantization to a Q/DQ ONNX model (CPU flavour: U8
  activations, S8 per-channel weights; TensorRT flavour: symmetric S8/S8).
- `nncf_ov`: NNCF post-training quantization of the OpenVINO model read from infercmp's ONNX,
  saved as IR.
- `pt2e`: PyTorch 2 export quantization with torchao's X86InductorQuantizer, saved as `.pt2`.

Each module offers a plain function that quantizes one model into a path (`quantize_*`, with an
`exclude` list, for `debug-precision`) and an `ensure_*` that goes through the cache.
"""
