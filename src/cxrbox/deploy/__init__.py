"""Model files: ONNX export, int8 quantization, parity, opening any model file (.pt or .onnx)."""
