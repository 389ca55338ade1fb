"""Quantization machinery behind the `quantize` verb (methods/quantize.py): PT2E int8 graphs lowered by
inductor, onnxruntime int8, packed low-bit weight storage, and the accuracy guard that keeps sensitive
layers in full precision."""
