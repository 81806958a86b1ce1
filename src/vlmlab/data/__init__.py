"""Data: task loaders, image preprocessing, tokenized datasets and seeded batch order."""
