"""Feature: ``memplan map`` — its computation and its result types."""
