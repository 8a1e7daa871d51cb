"""
Sphinx configuration of the twisted_tcp documentation.

Build it (warnings are errors) from the repository root with::

    python -m sphinx -W --keep-going -b html docs docs/_build/html

The docstrings of twisted_tcp are written in epytext, as Twisted's own are
(C{code}, L{link}, @param, @return, @raise, @ivar).  Rather than rewrite them,
L{epytext_to_rest} converts that markup to reStructuredText as autodoc reads
each docstring.  The twistd options are rendered from the option table of
C{twistd tcpserver} itself, so that they cannot drift from the code.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

from docutils import nodes
from docutils.statemachine import StringList
from sphinx.util.docutils import SphinxDirective

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # document the checkout, not an installed copy

import twisted_tcp  # noqa: E402
from twisted_tcp import _twistd  # noqa: E402

project = "twisted_tcp"
author = "the twisted_tcp authors"
copyright = "the twisted_tcp authors"
version = release = twisted_tcp.__version__

extensions = ["sphinx.ext.autodoc"]
exclude_patterns = ["_build"]
templates_path: list[str] = []

autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_class_signature = "separated"  # no constructor signatures: use the factories
default_role = "code"  # `x` in the pages is inline code, as ``x``

html_theme = "alabaster"
html_theme_options = {
    "description": "Jane Street Async's Tcp API on Twisted",
    "fixed_sidebar": True,
}
html_static_path: list[str] = []


# -- epytext markup in docstrings ----------------------------------------------

_INLINE = re.compile(r"(?<![\w\\])([LCIBU])\{")
_FIELD = re.compile(r"^(\s*)@(\w+)(?:\s+([^:]+?))?\s*:(.*)$")
_FIELDS = {
    "param": "param",
    "type": "type",
    "keyword": "keyword",
    "return": "returns",
    "returns": "returns",
    "rtype": "rtype",
    "raise": "raises",
    "raises": "raises",
    "ivar": "ivar",
    "cvar": "cvar",
    "var": "var",
    "note": "note",
    "see": "see",
}


def _inline(kind: str, inner: str) -> str:
    if kind == "C":
        return f"``{inner}``" if inner.strip() else inner
    inner = _convert_inline(inner)
    if kind == "L":
        text, _, target = inner.partition("<")
        if target.endswith(">"):  # L{text <target>}
            return f":py:obj:`{text.strip()} <{target[:-1].strip()}>`"
        return f":py:obj:`{inner}`"
    if kind == "I":
        return f"*{inner}*"
    if kind == "B":
        return f"**{inner}**"
    return f"`{inner} <{inner}>`__"  # U{url}


def _convert_inline(text: str) -> str:
    """Replace C{...}, L{...}, I{...}, B{...} and U{...}, with nested braces."""
    out: list[str] = []
    i = 0
    while True:
        match = _INLINE.search(text, i)
        if match is None:
            out.append(text[i:])
            return "".join(out)
        depth, j = 1, match.end()
        while j < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[j], 0)
            j += 1
        if depth:  # unbalanced: leave the rest alone
            out.append(text[i:])
            return "".join(out)
        before = text[i : match.start()]
        rendered = _inline(match.group(1), text[match.end() : j - 1])
        # reST inline markup must not touch a word character.
        if before and (before[-1].isalnum() or before[-1] in "_"):
            rendered = "\\ " + rendered
        if j < len(text) and (text[j].isalnum() or text[j] == "_"):
            rendered += "\\ "
        out.append(before + rendered)
        i = j


def epytext_to_rest(lines: list[str]) -> list[str]:
    """Convert one docstring's epytext lines to reStructuredText lines."""
    result: list[str] = []
    in_fields = False
    for line in lines:
        match = _FIELD.match(line)
        if match and match.group(2) in _FIELDS:
            indent, tag, arg, body = match.groups()
            if not in_fields and result and result[-1].strip():
                result.append("")  # a field list starts after a blank line
            in_fields = True
            name = _FIELDS[tag] + (f" {arg.strip()}" if arg else "")
            result.append(f"{indent}:{name}:{_convert_inline(body)}")
            continue
        if in_fields and line.strip() and not line.startswith((" ", "\t")):
            in_fields = False
        result.append(_convert_inline(line))
    return result


def _process_docstring(
    app: Any, what: str, name: str, obj: object, options: Any, lines: list[str]
) -> None:
    if what == "data":
        # A value's docstring is the string under its assignment, in the
        # private module that defines it, not the docstring of its class.
        lines[:] = _attribute_doc(name) or lines
    lines[:] = epytext_to_rest(lines)


def _attribute_doc(name: str) -> list[str]:
    from sphinx.pycode import ModuleAnalyzer

    short = name.rpartition(".")[2]
    for module in ("_where", "_connect", "_reader", "_writer", "_server"):
        docs = ModuleAnalyzer.for_module(f"twisted_tcp.{module}").find_attr_docs()
        if ("", short) in docs:
            return list(docs[("", short)])
    return []


_INTERFACE = re.compile(r"<InterfaceClass [\w.]*?(\w+)>")


def _process_signature(
    app: Any,
    what: str,
    name: str,
    obj: object,
    options: Any,
    signature: str | None,
    return_annotation: str | None,
) -> tuple[str | None, str | None]:
    """Show zope interfaces in signatures by name: C{IProtocol}, not C{<InterfaceClass ...>}."""
    if signature:
        signature = _INTERFACE.sub(r"\1", signature)
    if return_annotation:
        return_annotation = _INTERFACE.sub(r"\1", return_annotation)
    return signature, return_annotation


def _skip_constructor(
    app: Any, what: str, name: str, obj: object, skip: bool, options: Any
) -> bool | None:
    """
    Leave out C{__init__} and C{__new__}, which the separated class signature
    would list as methods: values and servers are made by the factories.
    """
    return True if name in ("__init__", "__new__") else None


# -- the options of twistd tcpserver ---------------------------------------------


# In an option's help: other options, and endpoint descriptions.
_LITERAL_IN_HELP = re.compile(
    r"(?<![`\w-])(--[a-z][\w-]*|(?:tcp6?|unix|ssl|haproxy|systemd):[^\s,;)]*[^\s,;).])"
)


class TwistdOptions(SphinxDirective):
    """
    ``.. twistd-options::``: a table of the options of ``twistd tcpserver``,
    made from its L{_twistd.Options} class.
    """

    def run(self) -> list[nodes.Node]:
        defaults = {"backlog": str(twisted_tcp.DEFAULTS.backlog)}
        rows = [
            ".. list-table::",
            "   :header-rows: 1",
            "   :widths: 22 12 66",
            "",
            "   * - option",
            "     - default",
            "     - meaning",
        ]
        for long, _short, default, doc in _twistd.Options.optParameters:
            default = defaults.get(long, default)
            doc = re.sub(r"\s*\[default: [^]]*\]", "", doc)
            doc = _LITERAL_IN_HELP.sub(r"``\1``", doc)  # as written: no dash, no link made
            rows += [
                f"   * - ``--{long}``",
                f"     - ``{default}``" if default is not None else "     - (none)",
                f"     - {doc}",
            ]
        container = nodes.container()
        self.state.nested_parse(
            StringList(rows, source="twisted_tcp._twistd.Options"), self.content_offset, container
        )
        return list(container.children)


class TwistdUsage(SphinxDirective):
    """``.. twistd-usage::``: what ``twistd tcpserver --help`` prints."""

    def run(self) -> list[nodes.Node]:
        text = _twistd.Options().getUsage(width=79).rstrip()
        return [nodes.literal_block(text, text)]


def setup(app: Any) -> dict[str, Any]:
    app.connect("autodoc-process-docstring", _process_docstring)
    app.connect("autodoc-process-signature", _process_signature)
    app.connect("autodoc-skip-member", _skip_constructor)
    app.add_directive("twistd-options", TwistdOptions)
    app.add_directive("twistd-usage", TwistdUsage)
    return {"parallel_read_safe": True}
