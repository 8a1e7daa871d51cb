"""
What the API reference needs of pydoctor beyond its command-line options.

C{conf.py} runs pydoctor with C{--system-class=twisted_tcp_pydoctor.System},
which skips the example handlers (C{twisted_tcp.examples}: programs shown in
the narrative pages, not API) and loads this module as a pydoctor extension.

Every public name is defined in a private module (C{twisted_tcp._connect})
and re-exported by the package's C{__all__}, and pydoctor documents it where
it is re-exported: C{twisted_tcp.connect}.  Three things stand in the way:

  - pydoctor leaves a name in the private module when that module's own
    C{__all__} lists it.  Ours list what the other private modules import
    from them, not an API: L{System.processModule} forgets them.
  - pydoctor then resolves the names in a moved object's annotations and
    docstring in its new parent's scope, the package's, where C{Deferred},
    C{IAddress} or C{Any} are not imported, so that they would not link
    (pydoctor issue 295).  L{ResolveInDefiningModule} resolves them in the
    module that defines the object, as Python does.
  - A name imported from the module that defined it before it was moved
    (C{twisted_tcp._where.WhereToListen}, in C{twisted_tcp._server}) is found
    where it was moved to (L{System.objForFullName}).

Also, the fields of L{twisted_tcp.Settings} are documented by the code itself
(L{document_settings_fields}).
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

from pydoctor import linker, model
from pydoctor.extensions import DocumentableMixin, ExtRegistrar

import twisted_tcp


def _is_private(module_name: str) -> bool:
    return any(p.startswith("_") and not p.endswith("__") for p in module_name.split("."))


class ResolveInDefiningModule(DocumentableMixin):
    """
    A re-exported object resolves names (in its annotations and its
    docstring) in the module that defines it, while it is documented where
    it is re-exported.
    """

    _defined_in: Any = None  # the module that defines it, once it is moved

    def reparent(self, new_parent: Any, new_name: str) -> None:
        if self._defined_in is None:
            self._defined_in = self.module
        super().reparent(new_parent, new_name)

    def _is_local(self, name: str) -> bool:
        local = getattr(self, "_localNameToFullName_map", {})
        return name in self.contents or name in local

    def _localNameToFullName(self, name: str) -> str:
        if self._defined_in is not None and not self._is_local(name):
            return self._defined_in._localNameToFullName(name)
        return super()._localNameToFullName(name)

    def isNameDefined(self, name: str) -> bool:
        if self._defined_in is not None:
            first = name.split(".")[0]
            return self._is_local(first) or self._defined_in.isNameDefined(first)
        return super().isNameDefined(name)

    def expandAnnotationName(self, name: str) -> str:
        origin = self._defined_in
        if origin is None:
            return super().expandAnnotationName(name)
        if origin.isNameDefined(name):
            return origin.expandName(name)
        return self.expandName(name)

    @property
    def docstring_linker(self) -> Any:
        if self._defined_in is None:
            return super().docstring_linker
        if self._linker is None:
            self._linker = _DefiningModuleLinker(self)
        return self._linker


class _DefiningModuleLinker(linker._EpydocLinker):
    """
    The linker of a re-exported function, class or value: pydoctor resolves
    the names of its annotations in its parent's scope (the package's), this
    one in the scope of the module that defines it.
    """

    def link_to(self, identifier: str, label: Any, *, is_annotation: bool = False) -> Any:
        if is_annotation:
            identifier = self.obj.expandAnnotationName(identifier)
        return super().link_to(identifier, label, is_annotation=is_annotation)


def document_settings_fields(system: model.System) -> None:
    """
    Each field of L{twisted_tcp.Settings} is made by C{_field(default, check,
    doc)}, whose C{doc} says what it is (C{Settings.describe} gives it to the
    twistd options too): it is the field's docstring here, with its default.
    """
    settings = system.allobjects.get("twisted_tcp.Settings")
    for field in settings.contents.values() if settings is not None else ():
        value = getattr(field, "value", None)
        if (
            field.docstring is None
            and isinstance(value, ast.Call)
            and isinstance(value.func, ast.Name)
            and value.func.id == "_field"
            and len(value.args) == 3
            and isinstance(value.args[2], ast.Constant)
        ):
            default = getattr(twisted_tcp.DEFAULTS, field.name)
            doc = f"{value.args[2].value} (default: C{{{default}}})."
            field._setDocstringValue(doc, value.lineno)
            field.kind = model.DocumentableKind.INSTANCE_VARIABLE


def setup_pydoctor_extension(r: ExtRegistrar) -> None:
    r.register_mixin(ResolveInDefiningModule)
    r.register_post_processor(document_settings_fields)


class System(model.System):
    custom_extensions = [__name__]

    def addPackage(self, package_path: Path, parent: Any = None, *args: Any, **kw: Any) -> None:
        if parent is not None and parent.fullName() == "twisted_tcp":
            if package_path.name == "examples":
                return
        super().addPackage(package_path, parent, *args, **kw)

    def processModule(self, mod: Any) -> None:
        super().processModule(mod)
        if _is_private(mod.fullName()):
            # The __all__ of a private module lists what the other modules
            # import from it; pydoctor would take it for the module's public
            # API and leave the names it lists there, instead of documenting
            # them where the package re-exports them.
            mod.all = None

    def objForFullName(self, fullName: str) -> Any:
        found = super().objForFullName(fullName)
        if found is None:
            # A name that the package re-exports, by the name it was imported
            # under elsewhere: twisted_tcp._where.WhereToListen, moved to
            # twisted_tcp.WhereToListen, which twisted_tcp._where remembers.
            module, _, name = fullName.rpartition(".")
            defined_in = super().objForFullName(module)
            if isinstance(defined_in, model.Module):
                moved_to = defined_in._localNameToFullName_map.get(name)
                if moved_to is not None and moved_to != fullName:
                    found = super().objForFullName(moved_to)
        return found
