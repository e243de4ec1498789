"""What the command line prints: whole lines, from any thread, to a reader that may leave."""

from __future__ import annotations

import os
import sys


def print_line(text: str) -> None:
    """Print one console line in a single write: events, job progress and the command's own
    lines come from several threads, and `print` writes the text and its newline apart,
    so two lines could share one. A reader that went away (`| head`) ends the echo quietly:
    the run goes on, as it would with its output discarded."""
    try:
        sys.stdout.write(text + "\n")
        sys.stdout.flush()
    except BrokenPipeError:
        discard_stdout()


def discard_stdout() -> None:
    """Point stdout at devnull once its reader has gone, as the Python docs advise, so that
    neither a later line nor the flush at exit raises BrokenPipeError again."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
