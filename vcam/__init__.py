"""FluxRT Camera daemon: processes, shared memory, sources, sinks, scheduler, control API, OBS bridge, CLI."""
