"""Downstream tasks: data sets, input encodings, heads, training, metrics and prediction."""
