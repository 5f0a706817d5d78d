"""Capacity plans: sequential simulation over a machine state that every step changes."""
