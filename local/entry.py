"""The `m5flow` command's entry point.

The command's modules take half a second to import (pandas, pyarrow). A Ctrl-C in that
time ends the command as one later does, with "interrupted" and exit 130, not with a
traceback from inside pandas.
"""

from __future__ import annotations

import sys


def main() -> int:
    try:
        from m5flow_local.cli import main as command
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return command()
