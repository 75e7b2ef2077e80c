"""`tcc sweep`: the sweep CLI, its targets (local engine, endpoints, hosted models) and plots."""
