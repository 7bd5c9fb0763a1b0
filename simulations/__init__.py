"""Launch scripts: one simulation, the local cluster, privacy sweeps."""
