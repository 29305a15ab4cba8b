"""Exports: SavedModel in TF Serving layout, TFLite, parity verification."""
