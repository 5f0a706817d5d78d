"""A progress bar on stderr for long runs (blocks done, pages per second, time left).

Shown only when stderr is a terminal and the command writes no JSON; it disappears when the
run ends, so it never mixes with results (stdout) or with the one-line errors (stderr).
"""

from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Iterator, Optional, TextIO

if TYPE_CHECKING:  # rich.progress is imported only when a bar is shown (start-up stays fast)
    from rich.console import Console

    from memplan.engine.simulation import Progress as ProgressCallback


def pages_per_second(pages_per_block: int) -> Any:
    """A rich progress column: pages judged per second (the tasks count memory blocks)."""
    from rich.progress import ProgressColumn, Task
    from rich.text import Text

    class PagesPerSecond(ProgressColumn):
        def render(self, task: Task) -> Text:
            speed = task.finished_speed or task.speed
            if not speed:
                return Text("- pages/s", style="progress.data.speed")
            rate = speed * pages_per_block
            for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
                if rate >= scale:
                    return Text(f"{rate / scale:.1f}{unit} pages/s", style="progress.data.speed")
            return Text(f"{rate:.0f} pages/s", style="progress.data.speed")

    return PagesPerSecond()


def wanted(as_json: bool, stream: Optional[TextIO] = None) -> bool:
    """A bar only for people: stderr is a terminal and stdout is not a JSON document."""
    stream = sys.stderr if stream is None else stream
    return not as_json and bool(getattr(stream, "isatty", lambda: False)())


@contextmanager
def block_progress(enabled: bool, pages_per_block: int, description: str = "simulating",
                   console: Optional[Console] = None) -> Iterator[Optional[ProgressCallback]]:
    """A ``progress(done, total)`` callback that drives a rich bar, or ``None`` when disabled."""
    if not enabled:
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from memplan.render.console import make_console

    bar = Progress(TextColumn("[progress.description]{task.description}"), BarColumn(),
                   MofNCompleteColumn(), TextColumn("blocks"), pages_per_second(pages_per_block),
                   TimeRemainingColumn(), console=console or make_console(stderr=True), transient=True)
    task = bar.add_task(description, total=None)

    def update(done: int, total: int) -> None:
        bar.update(task, completed=done, total=total)
        if done >= total:
            # Every block judged: the bar goes before the results print (they stream from the
            # judging, inside this context; a live bar would route stdout through stderr).
            bar.stop()

    with bar:
        yield update
