"""Controlled studies: spec, control check, runner, combined results."""
