"""The lab: real Linux hosts on one machine, for tests, benchmarks and the demo."""
