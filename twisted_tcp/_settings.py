"""
Every limit and timeout of twisted_tcp in one frozen value, L{Settings}: its
fields hold each default once, and each field is checked once, by the
checker written here, whoever gives it (a keyword argument of L{connect} or
L{Server.create}, a twistd option, a worker's settings).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import attrs

KiB = 1024


def check_count(
    name: str, value: object, *, least: int = 1, none: str | None = None, none_as: str = "None"
) -> Any:
    """
    C{value} if it is an int (not a bool) of at least C{least}; C{None} if
    it is C{None} and C{none} says what None means (C{none_as} is how the
    error names None).

    @raise TypeError: if it is not an int (or None where None means nothing).
    @raise ValueError: if it is less than C{least}.
    """
    if type(value) is int and value >= least:
        return value
    if value is None and none is not None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        what = "an int" + (f" or {none_as} ({none})" if none else "")
        raise TypeError(f"{name} must be {what}, not {type(value).__name__}: {value!r:.80}")
    if value < least:
        raise ValueError(f"{name} must be at least {least}, not {value}")
    return value


def check_seconds(
    name: str,
    value: object,
    *,
    zero: bool = False,
    none: str | None = None,
    none_as: str = "None",
) -> float | None:
    """
    C{value} as a float if it is a finite number of seconds, more than 0 (or
    0 if C{zero}); C{None} if it is C{None} and C{none} says what None means
    (C{none_as} is how the error names None: a command line says C{'none'}).

    @raise TypeError: if it is not an int or a float (a bool is not), or is
        None where None means nothing.
    @raise ValueError: for NaN, infinity, a negative number, or 0 unless
        C{zero}.
    """
    if value is None and none is not None:
        return None
    least = "0 or more" if zero else "more than 0"
    what = f"a number of seconds, {least}" + (f", or {none_as} ({none})" if none else "")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be {what}, not {type(value).__name__}: {value!r:.80}")
    if not (math.isfinite(value) and (value >= 0 if zero else value > 0)):
        raise ValueError(f"{name} must be {what}, not {value!r}")
    return float(value)


def _field(default: Any, check: Callable[[str, object], Any], doc: str) -> Any:
    def validate(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
        check(attribute.name, value)

    return attrs.field(default=default, validator=validate, metadata={"check": check, "doc": doc})


def _count(*, none: str | None = None) -> Callable[..., Any]:
    return lambda name, value, **kw: check_count(name, value, none=none, **kw)


def _seconds(*, zero: bool = False, none: str | None = None) -> Callable[..., Any]:
    return lambda name, value, **kw: check_seconds(name, value, zero=zero, none=none, **kw)


@attrs.frozen
class Settings:
    """
    The limits and timeouts of connections and servers, each checked when
    the value is made: a count must be an int (not a bool), a duration a
    finite int or float, and where a field takes C{None} it says what None
    means.  Make a changed copy with C{attrs.evolve(settings, field=value)}.

    @raise TypeError: for a value of the wrong type.
    @raise ValueError: for a value out of range, NaN or infinity.
    """

    timeout: float | None = _field(
        30.0, _seconds(none="no deadline"), "seconds for a whole connect attempt"
    )
    reader_buffer_size: int = _field(
        128 * KiB, _count(), "unread bytes above which a reader stops reading from its socket"
    )
    max_line_length: int = _field(
        64 * KiB, _count(), "the longest line or record read_line and read_until return"
    )
    buffer_age_limit: float | None = _field(
        120.0, _seconds(none="unlimited"), "seconds written bytes may wait unsent"
    )
    close_timeout: float | None = _field(
        30.0, _seconds(zero=True, none="wait for ever"), "seconds a close waits for a flush"
    )
    idle_timeout: float | None = _field(
        None, _seconds(none="never"), "seconds after which a silent server connection closes"
    )
    handshake_timeout: float = _field(
        30.0, _seconds(), "seconds a TLS client has to finish its handshake"
    )
    max_connections: int = _field(10000, _count(), "connections a server serves at once")
    backlog: int = _field(64, _count(), "the kernel's queue of connections not yet accepted")
    shutdown_timeout: float = _field(
        10.0, _seconds(zero=True), "seconds handlers get to finish when twistd stops"
    )
    max_connections_per_peer: int | None = _field(
        None, _count(none="unlimited"), "connections a server takes from one client address"
    )

    @staticmethod
    def check(field: str, value: object, label: str | None = None, none_as: str = "None") -> Any:
        """
        Check C{value} for C{field} as making a L{Settings} would, naming
        C{label} (such as a command-line option) in the error instead, and
        None as C{none_as}; return it (a duration as a float).
        """
        check = attrs.fields_dict(Settings)[field].metadata["check"]
        return check(label or field, value, none_as=none_as)

    @staticmethod
    def describe(field: str) -> str:
        """What C{field} is, in a few words."""
        return str(attrs.fields_dict(Settings)[field].metadata["doc"])


DEFAULTS = Settings()
"""The defaults of every limit and timeout."""


def settings_with(**given: Any) -> Settings:
    """
    L{DEFAULTS} with the C{given} fields: the defaults themselves, made and
    checked once, where every value given is the default object (as when a
    caller passed none), so that a connection made with the defaults pays
    for no check.
    """
    for name, value in given.items():
        if value is not getattr(DEFAULTS, name):
            break
    else:
        return DEFAULTS
    # Not the defaults: the same values come again and again (a client that
    # connects with timeout=10 each time), so a made Settings is kept.
    values = tuple(given.values())
    key = (tuple(given), values, tuple(map(type, values)))  # (True is not 1)
    try:
        settings = _made.get(key)
    except TypeError:  # an unhashable value: Settings says what is wrong with it
        settings = None
    if settings is None:
        settings = attrs.evolve(DEFAULTS, **given)
        if len(_made) >= 64:
            _made.clear()
        _made[key] = settings
    return settings


_made: dict[tuple[tuple[Any, ...], ...], Settings] = {}


__all__ = ["DEFAULTS", "Settings", "check_count", "check_seconds", "settings_with"]
