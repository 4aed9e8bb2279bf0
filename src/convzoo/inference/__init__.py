"""Inference: evaluation with the papers' protocols (center, 10-crop, dense), prediction,
per-class reports, the exported-graph runtimes (ONNX Runtime, OpenVINO) and benchmarks.
Imports nothing from `training`.

- evaluate: top-1/top-5 over a loader; dense: VGG's multi-scale evaluation; report: per-class
- predict: files and folders to top-k answers; runtime: backends chosen and checked
- bench: interleaved timing of the model and its peers
"""
