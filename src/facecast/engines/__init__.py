"""Inference engines: ONNX model contracts, onnxruntime sessions (TensorRT/CUDA/CPU), the shared pool."""
