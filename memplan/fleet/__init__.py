"""Feature: ``memplan fleet`` — per-host work, aggregation, result types and executors."""
