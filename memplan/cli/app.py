"""The click group and the one place where errors become exit statuses."""

from __future__ import annotations

import os
import sys
from typing import Any

import click

from memplan import __version__
from memplan.core.errors import MemplanError
from memplan.core.status import ExitStatus


class MemplanGroup(click.Group):
    """Turns ``MemplanError`` into one stderr line and ``ExitStatus.BAD_INPUT`` (httpie's
    ``raw_main`` idea); ``MEMPLAN_TRACEBACK=1`` re-raises for debugging."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except MemplanError as exc:
            if os.environ.get("MEMPLAN_TRACEBACK"):
                raise
            click.echo(f"memplan: error: {exc}", err=True)
            ctx.exit(int(ExitStatus.BAD_INPUT))
        except BrokenPipeError:  # pragma: no cover - `memplan ... | head`
            sys.stderr.close()
            ctx.exit(int(ExitStatus.SUCCESS))


@click.group(cls=MemplanGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "-V", "--version", prog_name="memplan")
def main() -> None:
    """Predict what Linux memory hot-unplug will really do, before touching a machine.

    memplan models the kernel's memory-block offlining (offline_pages()) and virtio-mem
    unplug over a machine profile (TOML) or a snapshot of a live host, in the kernel's
    mainline "refcount" semantics or the proposed "skippable" one. It only reads.

    \b
    Examples:
      memplan profiles
      memplan simulate profiles/sbm-guest.toml
      memplan map profiles/sbm-guest.toml
      memplan explain profiles/sbm-guest.toml 36

    Shell completion (bash): eval "$(_MEMPLAN_COMPLETE=bash_source memplan)"
    """
