"""The local commands' waits end on a stop signal, whichever thread the kernel hands it to."""

from __future__ import annotations

import signal
import threading
import time

import pytest

from m5flow_local.stopping import stop_signals_held, unless_stopped


def test_a_wait_returns_its_value_or_raises_its_error():
    assert unless_stopped(lambda: 42) == 42
    with pytest.raises(TimeoutError, match="no forecast"):
        unless_stopped(lambda: (_ for _ in ()).throw(TimeoutError("no forecast")))


def test_a_stop_signal_taken_by_another_thread_stops_the_wait():
    """The case a plain wait in the main thread sleeps through: the signal lands elsewhere."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    never = threading.Event()

    def signal_this_thread_soon() -> None:  # as the kernel may pick any of the cloud's threads
        time.sleep(0.3)
        signal.pthread_kill(threading.get_ident(), signal.SIGINT)

    threading.Thread(target=signal_this_thread_soon, daemon=True).start()
    started = time.monotonic()
    try:
        with pytest.raises(KeyboardInterrupt):
            unless_stopped(lambda: never.wait(timeout=20))  # a plain wait: 20 s, then no raise
    finally:
        never.set()
        signal.signal(signal.SIGINT, previous)
    assert time.monotonic() - started < 10


def test_a_stop_signal_during_a_shutdown_waits_for_its_end():
    """The shutdown runs to its end (it kills the training hosts last), then the signal."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    finished = []
    try:
        with pytest.raises(KeyboardInterrupt), stop_signals_held():
            signal.raise_signal(signal.SIGINT)
            time.sleep(0.05)  # where a plain handler would have raised
            finished.append(True)
        assert finished == [True]
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, previous)


def test_until_stopped_blocks_until_the_signal():
    """`m5flow local up` waits here; a wait that returned at once ended it after start-up."""
    from m5flow_local.stopping import until_stopped

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    main = threading.get_ident()
    threading.Timer(0.5, lambda: signal.pthread_kill(main, signal.SIGINT)).start()
    started = time.monotonic()
    try:
        with pytest.raises(KeyboardInterrupt):
            until_stopped()
    finally:
        signal.signal(signal.SIGINT, previous)
    assert time.monotonic() - started >= 0.4


def test_every_stop_signal_stops_the_local_cloud_as_ctrl_c_does():
    """`kill` and a closed terminal too: with Python's defaults they end the process before
    the shutdown kills the training hosts."""
    from m5flow_local.stopping import stop_on_signals

    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        stop_on_signals()
        assert all(signal.getsignal(s) is signal.default_int_handler for s in previous)
    finally:
        for stop_signal, handler in previous.items():
            signal.signal(stop_signal, handler)
