"""The study report: renders a finished study and its analysis results (computes nothing)."""
