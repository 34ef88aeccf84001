"""Export: fused and swappable ONNX graphs, quantization and parity checks."""
