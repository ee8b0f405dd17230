"""HuggingFace (PyTorch) interchange: per-family weight maps (tables), import and export."""
