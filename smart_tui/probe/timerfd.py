"""The probe's precise send clock: a Linux timerfd driven through ctypes.

``TimerFd()`` raises OSError (or AttributeError without the libc calls) where timerfds
are unavailable; the engine then falls back to loop timers. The fd is non-blocking:
watch it with ``loop.add_reader`` and ``drain`` it on each wake-up."""

from __future__ import annotations

import ctypes
import os

_NS_PER_S = 1_000_000_000


class _Timespec(ctypes.Structure):
    _fields_ = (("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long))


class _Itimerspec(ctypes.Structure):
    _fields_ = (("it_interval", _Timespec), ("it_value", _Timespec))


class TimerFd:
    """A Linux timerfd armed at absolute CLOCK_MONOTONIC times.

    uvloop timers have millisecond granularity, which would add up to 1 ms of send
    delay (and so of measured latency) to every open-loop request; a timerfd wakes the
    loop within microseconds."""

    _CLOCK_MONOTONIC = 1
    _TFD_NONBLOCK = os.O_NONBLOCK
    _TFD_CLOEXEC = os.O_CLOEXEC
    _TFD_TIMER_ABSTIME = 1
    _PR_SET_TIMERSLACK = 29

    def __init__(self) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        self._settime = libc.timerfd_settime
        fd = libc.timerfd_create(
            self._CLOCK_MONOTONIC, self._TFD_NONBLOCK | self._TFD_CLOEXEC
        )
        if fd < 0:
            raise OSError(ctypes.get_errno(), "timerfd_create failed")
        self.fd: int = fd
        # The default 50 us timer slack would be added to every wake-up.
        libc.prctl(self._PR_SET_TIMERSLACK, 1000, 0, 0, 0)
        self._spec = _Itimerspec()
        self._spec_ref = ctypes.byref(self._spec)

    def arm_at(self, monotonic_ns: int, interval_ns: int = 0) -> None:
        """Fire at ``monotonic_ns``, then every ``interval_ns`` if non-zero (a fixed
        rate needs no re-arming, which saves a syscall per request)."""
        value = self._spec.it_value
        value.tv_sec, value.tv_nsec = divmod(max(monotonic_ns, 1), _NS_PER_S)
        interval = self._spec.it_interval
        interval.tv_sec, interval.tv_nsec = divmod(interval_ns, _NS_PER_S)
        if self._settime(self.fd, self._TFD_TIMER_ABSTIME, self._spec_ref, None) != 0:
            raise OSError(ctypes.get_errno(), "timerfd_settime failed")

    def disarm(self) -> None:
        self._spec.it_value.tv_sec = self._spec.it_value.tv_nsec = 0
        self._spec.it_interval.tv_sec = self._spec.it_interval.tv_nsec = 0
        self._settime(self.fd, 0, self._spec_ref, None)

    def drain(self) -> None:
        # try/except rather than contextlib.suppress: this runs once per tick.
        try:  # noqa: SIM105
            os.read(self.fd, 8)
        except BlockingIOError:
            pass

    def close(self) -> None:
        os.close(self.fd)
