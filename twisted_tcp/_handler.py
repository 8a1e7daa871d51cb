"""
Checking a handler (or C{with_connection}'s C{f}) when it is given, so that
one that could never run fails there, with what to do, instead of failing
quietly at every connection.
"""

from __future__ import annotations

import inspect
from inspect import CO_ASYNC_GENERATOR, CO_GENERATOR, CO_VARARGS
from types import FunctionType


def check_handler(handler: object, name: str, call: str) -> None:
    """
    Check that C{handler} can be called as C{call} (such as
    C{"handler(address, reader, writer)"}) and run.

    @raise TypeError: naming C{name}, if it is not callable, is a generator
        or async generator function (its body would never run: nothing
        iterates it), or cannot take three positional arguments.
    """
    if type(handler) is FunctionType and _takes_three(handler):
        return  # the common case, without inspect (with_connection checks f at every call)
    if not callable(handler):
        raise TypeError(
            f"{name} must be callable as {call}, not {type(handler).__name__}: {handler!r:.80}"
        )
    title = getattr(handler, "__qualname__", None) or repr(handler)
    code_of = handler if inspect.isroutine(handler) else getattr(handler, "__call__", handler)  # noqa: B004
    if inspect.isgeneratorfunction(code_of) or inspect.isasyncgenfunction(code_of):
        kind = "an async generator" if inspect.isasyncgenfunction(code_of) else "a generator"
        raise TypeError(
            f"{name} {title} is {kind} function (it yields), so calling it would not run "
            "its body: write it as an 'async def' function that awaits, or decorate a "
            "generator with twisted.internet.defer.inlineCallbacks"
        )
    try:
        signature = inspect.signature(handler)
    except (TypeError, ValueError):
        return  # some builtins have none: let them be
    try:
        signature.bind(None, None, None)
    except TypeError as e:
        raise TypeError(
            f"{name} is called as {call}, but {title}{signature} cannot be: {e}"
        ) from None


def _takes_three(function: FunctionType) -> bool:
    """
    Whether a plain Python function (not a generator of either kind) can be
    called with three positional arguments and no keyword, read from its
    code object; C{False} means "ask inspect", which says why.
    """
    code = function.__code__
    if code.co_flags & (CO_GENERATOR | CO_ASYNC_GENERATOR):
        return False
    positional = code.co_argcount
    required = positional - len(function.__defaults__ or ())
    keyword_required = code.co_kwonlyargcount - len(function.__kwdefaults__ or ())
    if keyword_required:
        return False
    return required <= 3 and (positional >= 3 or bool(code.co_flags & CO_VARARGS))


__all__ = ["check_handler"]
