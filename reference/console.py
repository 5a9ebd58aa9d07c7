"""What every command line of the project shares: a closed standard output ends a command quietly."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from typing import ParamSpec

P = ParamSpec("P")


def quiet_broken_pipe(main: Callable[P, int]) -> Callable[P, int]:
    """`main` that, when its reader closes standard output early (``| head``), stops with exit status 1 and no
    traceback, as Python's documentation advises (stdout is pointed at /dev/null so the final flush is silent)."""

    @functools.wraps(main)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> int:
        try:
            code = main(*args, **kwargs)
            sys.stdout.flush()
            return code
        except BrokenPipeError:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            return 1

    return wrapper
