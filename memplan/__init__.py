"""memplan: predict what Linux memory hot-unplug will really do."""

__version__ = "0.1.0"
