"""bulkconn's benchmark harness: ``python -m benchmarks run [--quick] [--only NAME]`` (see benchmarks/README.md)."""
