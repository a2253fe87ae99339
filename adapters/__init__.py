"""AET's edges: bus backends, ingest sources and alert sinks."""
