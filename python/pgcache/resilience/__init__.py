"""Failing fast when a dependency keeps failing: the circuit breaker. Needs no third-party
package."""
