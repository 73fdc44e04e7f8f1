"""Applications on top of the core: the demo, the benchmarks, the drift benchmark, and metrics."""
