"""
Sphinx configuration of the twisted_tcp documentation.

Build it (warnings are errors) from the repository root with::

    python -m sphinx -W --keep-going -b html docs docs/_build/html

The narrative pages are Sphinx's.  The API reference (C{api/}) is pydoctor's,
as Twisted's own is: the docstrings are epytext, like Twisted's (C{code},
L{link}, @param, @return, @raise, @ivar), and pydoctor reads them as they are.
Its Sphinx extension runs pydoctor on the package at the start of the build,
and the pages link into the reference through the inventory of the objects
it documents.  Links to Python and Twisted come from the two small
inventories that C{_support/make_inventories.py} writes at the start of the
build: it needs no network.  The twistd options are rendered from the option table of
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
SUPPORT = Path(__file__).resolve().parent / "_support"
sys.path.insert(0, str(ROOT))  # document the checkout, not an installed copy
sys.path.insert(0, str(SUPPORT))  # twisted_tcp_pydoctor (for pydoctor), make_inventories

import make_inventories  # noqa: E402

import twisted_tcp  # noqa: E402
from twisted_tcp import _twistd  # noqa: E402

project = "twisted_tcp"
author = "the twisted_tcp authors"
copyright = "the twisted_tcp authors"
version = release = twisted_tcp.__version__

extensions = ["sphinx.ext.intersphinx", "pydoctor.sphinx_ext.build_apidocs"]
exclude_patterns = ["_build", "_support"]
templates_path: list[str] = []
nitpicky = True  # every cross-reference must resolve
default_role = "code"  # `x` in the pages is inline code, as ``x``

html_theme = "alabaster"
html_theme_options = {
    "description": "Jane Street Async's Tcp API on Twisted",
    "fixed_sidebar": True,
    # Wide enough for the examples' 99 columns of code beside the sidebar.
    "page_width": "1180px",
    "body_max_width": "none",
}
html_static_path = ["_support/static"]
html_css_files = ["twisted_tcp.css"]


# -- links to Python and Twisted, offline ---------------------------------------

PYTHON_DOCS = "https://docs.python.org/3"
TWISTED_DOCS = "https://docs.twisted.org/en/stable/api"
# Written at each build, from the names listed in make_inventories (and
# checked as they are written), into the build directory: made, not kept.
_inventories = make_inventories.write(ROOT / "docs" / "_build" / "inventories")
PYTHON_INVENTORY = str(_inventories["python"])
TWISTED_INVENTORY = str(_inventories["twisted"])

intersphinx_mapping = {
    "python": (PYTHON_DOCS, PYTHON_INVENTORY),
    "twisted": (TWISTED_DOCS, TWISTED_INVENTORY),
}


# -- the API reference, by pydoctor ---------------------------------------------

# pydoctor writes the reference into api/ (in place of the placeholder page
# api/index.rst), and its inventory of what it documents becomes an
# intersphinx project of this build, so that :func:`twisted_tcp.connect`
# links into it.
pydoctor_url_path = "api/"
pydoctor_args = [
    "--project-name=twisted_tcp",
    f"--project-version={version}",
    "--project-url=../index.html",  # the project's name links back to these pages
    f"--project-base-dir={ROOT}",
    "--docformat=epytext",
    # Documents each name of twisted_tcp.__all__ at the package (see
    # _support/twisted_tcp_pydoctor.py), and skips the example handlers.
    "--system-class=twisted_tcp_pydoctor.System",
    # The private modules (twisted_tcp._server...) are pydoctor's "private":
    # out of the listings unless "Show Private API" is on, as in Twisted's
    # reference, but there for the links to what they define (the Handler
    # type of Server.create...).  __init__, __repr__, __reduce__... are left
    # out: the values and servers are made by the functions and factories
    # documented, and none of them has a docstring.
    "--privacy=HIDDEN:twisted_tcp.__*__",
    "--privacy=HIDDEN:twisted_tcp.**.__*__",
    f"--template-dir={SUPPORT / 'templates'}",  # extra.css
    "--cls-member-order=source",
    f"--intersphinx-file={PYTHON_INVENTORY}::{PYTHON_DOCS}",
    f"--intersphinx-file={TWISTED_INVENTORY}::{TWISTED_DOCS}",
    "--html-output={outdir}/api",
    str(ROOT / "twisted_tcp"),
]


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
        block = nodes.literal_block(text, text)
        block["language"] = "text"  # as printed: not highlighted as Python
        return [block]


def _sphinx_code_directives(app: Any) -> None:
    """
    Give C{code-block} and C{code} back to Sphinx once pydoctor has run:
    importing pydoctor's reST support registers its own, which render every
    block as Python, whatever its language, in docutils' global registry.
    """
    from sphinx.directives.code import CodeBlock
    from sphinx.directives.patches import Code

    app.add_directive("code-block", CodeBlock, override=True)
    app.add_directive("sourcecode", CodeBlock, override=True)
    app.add_directive("code", Code, override=True)


def setup(app: Any) -> dict[str, Any]:
    app.add_directive("twistd-options", TwistdOptions)
    app.add_directive("twistd-usage", TwistdUsage)
    # After pydoctor's own builder-inited handler (priority 500), which runs it.
    app.connect("builder-inited", _sphinx_code_directives, priority=900)
    return {"parallel_read_safe": True}
