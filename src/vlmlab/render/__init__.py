"""Rendering primitives: report sections of text, tables and matplotlib figures, written as HTML and Markdown."""
