"""What the tests and the benchmarks share: fixtures (pytest plugins), factories of test data,
a fault-injecting HTTP server and a load driver."""
