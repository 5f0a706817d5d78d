"""Feature: ``memplan explain`` — its computation and its result types."""
