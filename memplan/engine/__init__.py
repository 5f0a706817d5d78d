"""The engine: runs the kernel model (``memplan.kernel``) over a whole machine, block by block."""
