"""Export to ONNX bundles, the parity gate and the speed table (``polyclip export``)."""
