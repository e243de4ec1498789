"""What stops the local cloud: Ctrl-C, `kill` and a closing terminal, wherever they land."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Callable, Iterator
from typing import TypeVar

T = TypeVar("T")
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def stop_on_signals() -> None:
    """Ctrl-C, `kill` (also -INT, which a shell's background job ignores by default) and a
    closing terminal all stop the local cloud, its jobs and its servers, as Ctrl-C does."""
    for stop_signal in STOP_SIGNALS:
        signal.signal(stop_signal, signal.default_int_handler)


@contextlib.contextmanager
def stop_signals_held() -> Iterator[None]:
    """Run the body (a shutdown) to its end through any stop signal, then deliver the first
    one that came.

    A shutdown interrupted half way leaves running what it had not stopped yet: the second
    Ctrl-C of an impatient user used to end the command before its training hosts were
    killed, and they ran on, orphaned. Off the main thread, where Python cannot set signal
    handlers, the body runs as it is.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    arrived: list[int] = []

    def hold(number: int, _: object) -> None:
        if not arrived:
            # os.write, not sys.stderr: the signal may land inside a write to stderr, and a
            # buffered stream written again from its handler raises "reentrant call".
            os.write(2, b"stopping: the shutdown ends first (its training hosts last)\n")
        arrived.append(number)

    previous = {stop_signal: signal.signal(stop_signal, hold) for stop_signal in STOP_SIGNALS}
    try:
        yield
    finally:
        for stop_signal, handler in previous.items():
            signal.signal(stop_signal, handler)
    if arrived:
        signal.raise_signal(arrived[0])


def unless_stopped(wait: Callable[[], T]) -> T:
    """Return `wait()`, or raise KeyboardInterrupt as soon as a stop signal arrives.

    Python runs handlers in the main thread only, and the kernel may hand the signal to any
    of the local cloud's threads, which leaves a plain wait in the main thread asleep. So
    `wait` runs in a thread of its own, and the main thread blocks reading one pipe: the
    signal's wakeup fd writes to it whichever thread takes the signal (and the handler then
    raises here), and the waiting thread writes to it when it is done.
    """
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    returned: list[T] = []
    raised: list[BaseException] = []  # raised again in the main thread

    def waiting() -> None:
        try:
            returned.append(wait())
        except BaseException as exc:
            raised.append(exc)
        with contextlib.suppress(OSError):  # the main thread stopped listening
            os.write(write_end, b"\0")

    waiter = threading.Thread(target=waiting, name="m5flow-wait", daemon=True)
    previous = signal.set_wakeup_fd(write_end)
    try:
        waiter.start()
        while not (returned or raised):
            os.read(read_end, 1)  # a signal's handler raises right after this returns
        if raised:
            raise raised[0]
        return returned[0]
    finally:
        signal.set_wakeup_fd(previous)
        os.close(read_end)
        # Else the waiter, a daemon thread, keeps write_end until the process ends.
        if returned or raised:
            waiter.join()
            os.close(write_end)


def until_stopped() -> None:
    """Block until a stop signal, whose handler raises KeyboardInterrupt here."""
    unless_stopped(threading.Event().wait)
