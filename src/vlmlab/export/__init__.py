"""Hand trained vlmlab models to the formats the field's tools load."""
