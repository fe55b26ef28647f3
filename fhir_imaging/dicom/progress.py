"""Progress bars (rich) for the DICOM commands, on stderr; silent when stderr is not a terminal or when disabled."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


class Reporter:
    """Hands out one progress task per phase (``task(description, total)`` → ``advance(n)``)."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress

    def task(self, description: str, total: int | None) -> Callable[[int], None]:
        task_id = self.progress.add_task(description, total=total)

        def advance(count: int) -> None:
            self.progress.advance(task_id, count)

        return advance


@contextmanager
def reporting(enabled: bool = True, console: Console | None = None) -> Iterator[Reporter]:
    """A ``Reporter`` whose bars show while the block runs."""
    console = console or Console(stderr=True)
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        disable=not (enabled and console.is_terminal),
    )
    with progress:
        yield Reporter(progress)
