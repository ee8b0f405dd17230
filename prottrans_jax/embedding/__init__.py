"""Embedding extraction: batching, encoders, HDF5 output."""
