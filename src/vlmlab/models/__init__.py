"""Model parts (vision encoders, projectors, LLM backbones, routing) and the assembled VLM."""
