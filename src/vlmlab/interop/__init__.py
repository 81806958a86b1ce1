"""Interoperability with the formats the field's tools use: LLaVA checkpoints in, and out."""
