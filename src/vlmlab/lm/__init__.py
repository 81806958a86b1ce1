"""Language-model pretraining of the tiny backbone ladder: offline corpus, recipe, cache, bits per byte."""
