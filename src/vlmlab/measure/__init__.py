"""Measurements: everything that loads a trained run and probes it, stored as content-addressed artifacts."""
