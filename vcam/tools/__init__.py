"""Tools apart from the daemon: the CLI, doctor, model downloads, benchmarks."""
