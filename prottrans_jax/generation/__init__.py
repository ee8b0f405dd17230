"""Generating proteins (ProtTXL, ProtXLNet, ProtT5's decoder) and scoring them under any family."""
