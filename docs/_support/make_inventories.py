"""
The two small Sphinx inventories (C{objects.inv} format) through which the
documentation links to Python's and Twisted's, without the network.

The documentation must build offline, so neither Sphinx's intersphinx nor
pydoctor can download C{https://docs.python.org/3/objects.inv} or Twisted's.
C{conf.py} writes, at the start of each build (L{write}), two inventories
that list only the Python and Twisted names our pages and docstrings refer
to, each with its real address on docs.python.org or docs.twisted.org, and
hands them to Sphinx (C{intersphinx_mapping}) and to pydoctor
(C{--intersphinx-file}).  Every name below is imported as they are written,
so that a misspelt one fails the build, and the kind and page of a Twisted
name are taken from the object itself, laid out as pydoctor lays out
Twisted's API (C{module.html}, C{module.Class.html}, C{module.html#function},
C{module.Class.html#method}).

To find the names a change of the docstrings needs, run from the root of the
repository::

    python docs/_support/make_inventories.py --check

which builds the API reference with pydoctor, as C{conf.py} does, and fails
naming every Python or Twisted name that a docstring or an annotation refers
to but that no inventory lists (such a name is left without a link).
"""

from __future__ import annotations

import builtins
import importlib
import inspect
import sys
import tempfile
import zlib
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
PYTHON_URL = "https://docs.python.org/3"
TWISTED_URL = "https://docs.twisted.org/en/stable/api"
PYTHON_FILE = "python.inv"
TWISTED_FILE = "twisted.inv"

# The names that the pages and the docstrings refer to, as they are written
# there (and as pydoctor resolves them).
PYTHON_NAMES = [
    # Built-in constants, functions and types, and exceptions.
    "None",
    "True",
    "False",
    "bool",
    "bytearray",
    "bytes",
    "classmethod",
    "dict",
    "float",
    "frozenset",
    "int",
    "list",
    "object",
    "property",
    "set",
    "staticmethod",
    "str",
    "tuple",
    "type",
    "BaseException",
    "EOFError",
    "Exception",
    "ImportError",
    "OSError",
    "RuntimeError",
    "SystemExit",
    "TimeoutError",
    "TypeError",
    "ValueError",
    # The standard library.
    "collections.deque",
    "contextvars.Context",
    "errno.EAGAIN",
    "errno.EINTR",
    "errno.ENOBUFS",
    "errno.EWOULDBLOCK",
    "collections.abc.AsyncIterator",
    "collections.abc.Awaitable",
    "collections.abc.Callable",
    "collections.abc.Coroutine",
    "collections.abc.Generator",
    "collections.abc.Iterable",
    "collections.abc.Iterator",
    "collections.abc.Sequence",
    "functools.cache",
    "os.PathLike",
    "re.S",
    "re.compile",
    "socket.socket.getsockopt",
    "socket.socket.setsockopt",
    "types.FunctionType",
    "types.coroutine",
    "typing.Any",
    "typing.Generic",
    "typing.Literal",
    "typing.NamedTuple",
    "typing.Protocol",
    "typing.TypeVar",
    "typing.overload",
    "weakref.WeakKeyDictionary",
]

TWISTED_NAMES = [
    "twisted.application.internet.ClientService",
    "twisted.application.internet.backoffPolicy",
    "twisted.application.service.Service",
    "twisted.internet.address.IPv4Address",
    "twisted.internet.address.IPv6Address",
    "twisted.internet.defer.Deferred",
    "twisted.internet.defer.CancelledError",
    "twisted.internet.endpoints.clientFromString",
    "twisted.internet.endpoints.serverFromString",
    "twisted.internet.error.CannotListenError",
    "twisted.internet.error.ConnectError",
    "twisted.internet.error.ConnectingCancelledError",
    "twisted.internet.error.ConnectionLost",
    "twisted.internet.error.TimeoutError",
    "twisted.internet.interfaces.IAddress",
    "twisted.internet.interfaces.IConnector",
    "twisted.internet.interfaces.IDelayedCall",
    "twisted.internet.interfaces.IListeningPort",
    "twisted.internet.interfaces.IOpenSSLClientConnectionCreator",
    "twisted.internet.interfaces.IProtocol",
    "twisted.internet.interfaces.IProtocolFactory",
    "twisted.internet.interfaces.IPushProducer",
    "twisted.internet.interfaces.IReactorTime",
    "twisted.internet.interfaces.IStreamClientEndpoint",
    "twisted.internet.interfaces.IStreamServerEndpoint",
    "twisted.internet.interfaces.ITCPTransport",
    "twisted.internet.interfaces.ITransport",
    "twisted.internet.protocol.ClientFactory",
    "twisted.internet.protocol.Factory",
    "twisted.internet.protocol.ProcessProtocol",
    "twisted.internet.protocol.Protocol",
    "twisted.internet.protocol.connectionDone",
    "twisted.internet.task.Clock",
    "twisted.internet.tcp.Client",
    "twisted.internet.tcp.Server",
    "twisted.internet.unix.Client",
    "twisted.internet.unix.Port",
    "twisted.internet.unix.Server",
    "twisted.logger.LogLevel",
    "twisted.logger.LogLevel.warn",
    "twisted.protocols.policies.ProtocolWrapper",
    "twisted.protocols.policies.WrappingFactory",
    "twisted.python.failure.Failure",
    "twisted.python.usage.Options",
    "twisted.python.usage.UsageError",
]

# docs.python.org documents the built-in names on four pages.
_BUILTIN_PAGES = {
    "constants": ("py:data", ["None", "True", "False"]),
    "functions": (
        "py:class",
        ["bool", "classmethod", "float", "int", "object", "property", "staticmethod", "type"],
    ),
    "stdtypes": (
        "py:class",
        ["bytearray", "bytes", "dict", "frozenset", "list", "set", "str", "tuple"],
    ),
    "exceptions": ("py:exception", [n for n in dir(builtins) if n[0].isupper()]),
}


def _find(name: str) -> tuple[str, list[Any]]:
    """
    Import C{name}: its module's name, and the objects from that module down
    to the named one.
    """
    parts = name.split(".")
    for split in range(len(parts), 0, -1):
        try:
            module = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        chain: list[Any] = [module]
        for attribute in parts[split:]:
            chain.append(getattr(chain[-1], attribute))  # AttributeError: misspelt
        return ".".join(parts[:split]), chain
    raise ImportError(f"cannot import any part of {name}")


def _is_class(obj: Any) -> bool:
    from zope.interface.interface import InterfaceClass

    return inspect.isclass(obj) or isinstance(obj, InterfaceClass)


def python_entry(name: str) -> tuple[str, str, str]:
    """C{(name, domain:role, location under PYTHON_URL)} of a Python name."""
    if "." not in name:
        getattr(builtins, name)  # AttributeError: not a built-in name
        for page, (role, names) in _BUILTIN_PAGES.items():
            if name in names:
                return name, role, f"library/{page}.html#{name}"
        raise ValueError(f"say on which page docs.python.org documents {name}")
    module, chain = _find(name)
    obj, parent = chain[-1], chain[-2]
    if name == "typing.Any" or type(obj).__name__.endswith("SpecialForm"):
        role = "py:data"  # (Any: a class since Python 3.11) documented as data
    elif _is_class(obj):
        role = "py:exception" if issubclass(obj, BaseException) else "py:class"
    elif _is_class(parent):
        role = "py:method" if callable(obj) else "py:attribute"
    elif callable(obj):
        role = "py:function"
    else:
        role = "py:data"
    return name, role, f"library/{module}.html#{name}"


def twisted_entry(name: str) -> tuple[str, str, str]:
    """C{(name, domain:role, location under TWISTED_URL)} of a Twisted name."""
    module, chain = _find(name)
    obj, parent = chain[-1], chain[-2]
    if len(chain) == 1:
        return name, "py:module", f"{name}.html"
    # pydoctor documents an object in the module that defines it, or where
    # the __all__ of a public module re-exports it from a private one.
    defined_in = getattr(obj, "__module__", module)
    if (_is_class(obj) or inspect.isfunction(obj)) and defined_in != module:
        private = any(part.startswith("_") for part in defined_in.split("."))
        if not private or name.split(".")[len(module.split("."))] not in chain[0].__all__:
            raise ValueError(f"{name} is documented in {defined_in}: refer to it there")
    if _is_class(obj):
        return name, "py:class", f"{name}.html"
    owner, _, attribute = name.rpartition(".")
    if _is_class(parent):
        role = "py:method" if callable(obj) else "py:attribute"
        return name, role, f"{owner}.html#{attribute}"
    role = "py:function" if callable(obj) else "py:attribute"
    return name, role, f"{owner}.html#{attribute}"


def inventory(project: str, version: str, entries: list[tuple[str, str, str]]) -> bytes:
    """An inventory in Sphinx's version 2 format, as C{objects.inv} is."""
    header = (
        "# Sphinx inventory version 2\n"
        f"# Project: {project}\n"
        f"# Version: {version}\n"
        "# The remainder of this file is compressed using zlib.\n"
    )
    lines = "".join(f"{name} {role} 1 {location} -\n" for name, role, location in sorted(entries))
    return header.encode() + zlib.compress(lines.encode(), 9)


def write(directory: Path) -> dict[str, Path]:
    """
    Write the inventories into C{directory}; return their paths, by project.

    @raise ImportError, AttributeError, ValueError: for a name that does not
        exist, or that the inventories cannot place.
    """
    directory.mkdir(parents=True, exist_ok=True)
    python = [python_entry(name) for name in PYTHON_NAMES]
    twisted = [twisted_entry(name) for name in TWISTED_NAMES]
    paths = {"python": directory / PYTHON_FILE, "twisted": directory / TWISTED_FILE}
    paths["python"].write_bytes(inventory("Python", "3", python))
    paths["twisted"].write_bytes(inventory("Twisted", "stable", twisted))
    return paths


def unlisted_names() -> list[str]:
    """
    Build the API reference with pydoctor as C{conf.py} does, and return the
    Python and Twisted names it looked for in the inventories but did not
    find there.
    """
    from pydoctor import sphinx as pydoctor_sphinx
    from pydoctor.driver import main

    sys.path.insert(0, str(HERE.parent))
    import conf

    asked: set[str] = set()
    get_link = pydoctor_sphinx.SphinxInventory.getLink

    def recording(self: Any, name: str) -> str | None:
        asked.add(name)
        return get_link(self, name)

    pydoctor_sphinx.SphinxInventory.getLink = recording  # type: ignore[method-assign]
    try:
        with tempfile.TemporaryDirectory() as out:
            args = [arg.format(outdir=out) for arg in conf.pydoctor_args]
            main(["--make-html", "--quiet", *args])
    finally:
        pydoctor_sphinx.SphinxInventory.getLink = get_link  # type: ignore[method-assign]
    listed = set(PYTHON_NAMES) | set(TWISTED_NAMES)
    stdlib = sys.stdlib_module_names - {"__future__"}
    missing = []
    for name in sorted(asked - listed):
        root = name.split(".")[0]
        if root == "builtins" and name.partition(".")[2] in listed:
            continue  # pydoctor looks for builtins.X, then for X
        if root == "twisted" or root in stdlib or (root == name and hasattr(builtins, name)):
            missing.append(name)
    return missing


def main(argv: list[str]) -> int:
    if argv != ["--check"]:
        print(__doc__)
        return 2
    missing = unlisted_names()
    for name in missing:
        print(f"not in any inventory (add it to {Path(__file__).name}): {name}")
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
