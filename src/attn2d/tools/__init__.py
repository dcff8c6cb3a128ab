"""Tools for looking inside modules and models: the profiler (and the counting behind it),
latency/memory benchmarks against naive references, interleaved timing, shape tracing,
gradient checks and attention-map statistics."""
