"""Packaging hook: ship the bundled profiles (``profiles/*.toml`` at the top of the checkout)
as package data ``memplan/profiles/`` in built wheels, so ``memplan profiles`` finds them after
``pip install .``; everything else is configured in pyproject.toml."""

import glob
import os
import shutil

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = os.path.dirname(os.path.abspath(__file__))


class BuildPyWithProfiles(build_py):
    def run(self) -> None:
        super().run()
        target = os.path.join(self.build_lib, "memplan", "profiles")
        os.makedirs(target, exist_ok=True)
        for path in sorted(glob.glob(os.path.join(HERE, "profiles", "*.toml"))):
            shutil.copy2(path, target)


setup(cmdclass={"build_py": BuildPyWithProfiles})
