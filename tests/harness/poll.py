"""Polling with a timeout: the tiers never assert on how long something took, they wait
(generously) for a condition to hold."""
import time


def wait_for(timeout, cond, *args, interval=0.2):
    """Calls cond(*args) until it returns something truthy or `timeout` seconds pass.
    Returns that value, or the last falsy one. cond is always called at least once, and
    once more after the deadline, so a slow machine never loses the last chance."""
    end = time.monotonic() + timeout
    while True:
        v = cond(*args)
        if v:
            return v
        if time.monotonic() >= end:
            return cond(*args)
        time.sleep(interval)
