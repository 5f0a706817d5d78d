"""Feature: ``memplan diff-semantics`` — its computation and its result types."""
