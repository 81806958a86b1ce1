"""Study reports: sections of text, tables and matplotlib figures, written as HTML and Markdown."""
