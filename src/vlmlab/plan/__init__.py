"""A study's plan before it runs: per variant the parameters trained, memory per GPU, FLOPs, steps and GPU-hours,
and (from a pilot study's records) the questions and seeds each comparison needs. Reads configs only."""
