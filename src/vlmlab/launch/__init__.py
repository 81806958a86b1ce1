"""`vlmlab study --launcher slurm|local`: a study's runs as submitit jobs (one per variant and seed, as arrays),
then a combine job that depends on them and writes the results, the analyses and the report."""
