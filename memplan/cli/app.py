"""The click group: lazy command loading, and the one place where errors become exit statuses.

Start-up stays instant: this module imports click and nothing heavy (no numpy, no rich, no
command module). ``memplan --help``, ``--version`` and completing a command name read the
command table below; a command's module (and with it numpy and rich) is imported only when
that command runs, shows its help or completes its options.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Any, Dict, List, NoReturn, Optional, Sequence, Tuple

import click

from memplan import __version__
from memplan.cli import signals
from memplan.core.errors import MemplanError, Terminated
from memplan.core.status import ExitStatus

if TYPE_CHECKING:  # imported when completing (a command that runs needs none of it)
    from click.shell_completion import CompletionItem

#: Every command: its module (which registers it on ``main`` with ``@main.command``) and its
#: short help, the first sentence of its docstring (tests/test_startup.py checks they agree).
COMMANDS: Dict[str, Tuple[str, str]] = {
    "diff-semantics": ("memplan.cli.diff",
                       "Show every block whose offline verdict differs between two kernel semantics."),
    "explain": ("memplan.cli.explain",
                "Tell the story of one memory block through every step of offline_pages()."),
    "fleet": ("memplan.cli.fleet", "Ask every host of a fleet the same question and aggregate the answers."),
    "map": ("memplan.cli.map", "Draw the machine as a grid of memory blocks, coloured by what offlining would do."),
    "plan": ("memplan.cli.plan",
             'Predict what "chmem -d SIZE" would do: offline memory blocks from the highest down.'),
    "profiles": ("memplan.cli.profiles", "List the bundled machine profiles with the one-line description of each."),
    "simulate": ("memplan.cli.simulate", 'Predict, block by block, what writing "offline" to memoryN/state would do.'),
    "snapshot": ("memplan.cli.snapshot", "Show what a snapshot of a machine captures, and what it cannot see."),
    "unplug": ("memplan.cli.unplug", "Predict the virtio-mem driver's response to a lower requested-size."),
}


def usage_error_line(exc: click.ClickException) -> str:
    """A click error as one line: ``memplan: error: simulate: No such option: --nope``."""
    message = " ".join(exc.format_message().split())
    ctx = getattr(exc, "ctx", None)
    where = ""
    if ctx is not None and ctx.parent is not None:
        where = ctx.command_path.partition(" ")[2] + ": "
    return signals.one_line(f"memplan: error: {where}{message}")


class MemplanGroup(click.Group):
    """Loads commands on demand (``COMMANDS``) and ends every run with one ``ExitStatus``:
    ``MemplanError`` and click's usage errors are one stderr line and ``BAD_INPUT``; Ctrl-C,
    SIGTERM and stdout errors end as ``memplan.cli.signals`` describes.
    ``MEMPLAN_TRACEBACK=1`` re-raises ``MemplanError`` for debugging."""

    # ---- lazy command table ----------------------------------------------------------------

    def list_commands(self, ctx: click.Context) -> List[str]:
        return sorted(set(COMMANDS) | set(self.commands))

    def get_command(self, ctx: click.Context, cmd_name: str) -> Optional[click.Command]:
        if cmd_name not in self.commands and cmd_name in COMMANDS:
            with signals.deferred():  # never half an import (see signals.deferred)
                __import__(COMMANDS[cmd_name][0])  # its @main.command registers it (-X importtime sees it)
        return self.commands.get(cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The command list from the table, as click would print it, importing nothing."""
        names = self.list_commands(ctx)
        if not names:
            return
        limit = formatter.width - 6 - max(len(name) for name in names)
        rows = [(name, self._short_help(name, limit)) for name in names]
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def _short_help(self, name: str, limit: int = 45) -> str:
        """A command's short help cut to ``limit`` as click cuts it, from the table when the
        command is not loaded (a stand-in ``click.Command`` does the cutting)."""
        command = self.commands.get(name) or click.Command(name, help=COMMANDS[name][1])
        return command.get_short_help_str(limit)

    def shell_complete(self, ctx: click.Context, incomplete: str) -> List[CompletionItem]:
        """Command names from the table (no command module imported), then the group's options."""
        from click.shell_completion import CompletionItem

        items = [CompletionItem(name, help=self._short_help(name)) for name in self.list_commands(ctx)
                 if name.startswith(incomplete)]
        items.extend(click.Command.shell_complete(self, ctx, incomplete))
        return items

    # ---- errors and exit statuses ------------------------------------------------------------

    def make_context(self, info_name: Optional[str], args: List[str], parent: Optional[click.Context] = None,
                     **extra: Any) -> click.Context:
        try:
            return super().make_context(info_name, args, parent, **extra)
        except KeyboardInterrupt:
            raise _Interrupted() from None

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except MemplanError as exc:
            if os.environ.get("MEMPLAN_TRACEBACK"):
                raise
            click.echo(signals.one_line(f"memplan: error: {exc}"), err=True)
            raise SystemExit(int(ExitStatus.BAD_INPUT)) from None
        except KeyboardInterrupt:
            # click would turn it into Abort ("Aborted!", exit 1): keep it a KeyboardInterrupt
            raise _Interrupted() from None
        except BrokenPipeError as exc:  # a write that went round the stdout guard: 141 all the same
            raise signals.OutputError(exc, signals.guarded_stream()) from None

    def main(self, args: Optional[Sequence[str]] = None, prog_name: Optional[str] = None,
             complete_var: Optional[str] = None, standalone_mode: bool = True, **extra: Any) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        with signals.handled():
            code = self._run(args, prog_name, complete_var, **extra)
            if signals.interrupt_lost():  # Ctrl-C swallowed on its way ("Exception ignored in ...")
                code = signals.finish(KeyboardInterrupt()) or int(ExitStatus.INTERRUPTED)
        _exit(code)

    def _run(self, args: Optional[Sequence[str]], prog_name: Optional[str], complete_var: Optional[str],
             **extra: Any) -> int:
        try:
            try:
                rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
                code = rv if isinstance(rv, int) and not isinstance(rv, bool) else 0
            except SystemExit as exc:
                code = _status(exc.code)
            sys.stdout.flush()  # an output error shows here at the latest
            return code
        except click.exceptions.NoArgsIsHelpError as exc:  # bare `memplan`: the help, exit 2
            exc.show()
            return int(ExitStatus.BAD_INPUT)
        except click.ClickException as exc:
            click.echo(usage_error_line(exc), err=True)
            return int(ExitStatus.BAD_INPUT)
        except MemplanError as exc:  # raised while parsing (an option callback)
            if os.environ.get("MEMPLAN_TRACEBACK"):
                raise
            click.echo(signals.one_line(f"memplan: error: {exc}"), err=True)
            return int(ExitStatus.BAD_INPUT)
        except click.exceptions.Abort:
            return signals.finish(KeyboardInterrupt()) or int(ExitStatus.INTERRUPTED)
        except (_Interrupted, KeyboardInterrupt, Terminated, signals.OutputError) as exc:
            status = signals.finish(KeyboardInterrupt() if isinstance(exc, _Interrupted) else exc)
            assert status is not None
            return status


class _Interrupted(BaseException):
    """Ctrl-C on its way past click (which would print "Aborted!" and exit 1)."""


def _status(code: Any) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    click.echo(str(code), err=True)  # sys.exit("message"), as Python prints it
    return 1


def _exit(code: int) -> NoReturn:
    sys.exit(code)


def leave(code: object, interrupted: bool = False) -> NoReturn:
    """End the ``memplan`` process with ``code`` (a ``SystemExit`` code) without the interpreter's
    teardown: freeing every module's objects one by one costs 25-40 ms once numpy is loaded (a
    sixth of a small ``simulate``), and nothing memplan does needs it. What the teardown does
    that matters is done first, as it would be: stdout and stderr flushed, the ``atexit``
    handlers run (temporary files, logging, multiprocessing). When that cannot be done as
    usual (a thread still running, a flush that fails, a code that is no exit status) the
    interpreter exits the ordinary way. Only the script calls this: ``main()`` (and with it
    ``CliRunner``) still raises ``SystemExit``.

    ``interrupted``: a run ended by a signal, its line said (130, 143), ends so whatever happens:
    the ordinary exit would re-raise SIGINT at itself when Python remembers a lost
    ``KeyboardInterrupt`` (exit status -2 instead of 130)."""
    import atexit
    import threading

    others = [t for t in threading.enumerate() if t is not threading.main_thread() and not t.daemon]
    if isinstance(code, bool) or not isinstance(code, int) or not 0 <= code <= 255 or (others and not interrupted):
        raise SystemExit(code)
    try:
        sys.stdout.flush()
        sys.stderr.flush()
        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
    except BaseException:  # noqa: BLE001  (the ordinary exit reports it as Python would)
        if not interrupted:
            raise SystemExit(code) from None
    os._exit(code)


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
