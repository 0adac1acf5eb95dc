"""Many threads calling one thing at once, for the thread-safety tests."""

from __future__ import annotations

import threading
from collections.abc import Callable

__all__ = ["hammer"]


def hammer(threads: int, calls: int, call_is_right: Callable[[int], bool]) -> None:
    """Start ``threads`` threads together; thread ``k`` makes ``calls`` calls of
    ``call_is_right(k)``, stopping at the first wrong answer. Raises the first exception a
    thread met, else an AssertionError naming the threads that got a wrong answer."""
    errors: list[BaseException] = []
    wrong: list[int] = []
    start = threading.Barrier(threads)

    def worker(k: int) -> None:
        try:
            start.wait()
            for _ in range(calls):
                if not call_is_right(k):
                    wrong.append(k)
                    return
        except BaseException as err:  # collected and re-raised in the calling thread
            errors.append(err)

    pool = [threading.Thread(target=worker, args=(k,)) for k in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    if errors:
        raise errors[0]
    assert not wrong, f"threads {sorted(wrong)} got wrong results"
