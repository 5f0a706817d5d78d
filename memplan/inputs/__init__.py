"""Everything that turns user input (profiles, snapshots) into a ``Machine``."""
