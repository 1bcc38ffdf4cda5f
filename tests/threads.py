"""Running a test body on several threads at once, with many thread switches."""

import sys
import threading
from typing import Optional


def errors_in_threads(serve, args, switch_interval: Optional[float] = 1e-6) -> list:
    """Runs ``serve(arg)`` for each of ``args`` on its own thread, all at once, with Python's switch
    interval at ``switch_interval`` (many switches: the interleavings that break shared state;
    None: left as it is), and returns the repr of every exception they raised."""
    errors = []

    def run(arg):
        try:
            serve(arg)
        except Exception as exc:  # noqa: BLE001 -- returned to the test
            errors.append(repr(exc))

    interval = sys.getswitchinterval()
    sys.setswitchinterval(interval if switch_interval is None else switch_interval)
    try:
        threads = [threading.Thread(target=run, args=(arg,)) for arg in args]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(interval)
    return errors
