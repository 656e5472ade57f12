"""The public namespace: no exported name hides a submodule of the same name."""

import importlib
import pkgutil
import types

import vauban


def test_no_exported_name_shadows_a_module():
    for info in pkgutil.iter_modules(vauban.__path__):
        module = importlib.import_module(f"vauban.{info.name}")
        assert getattr(vauban, info.name) is module, info.name


def test_public_functions_are_callables():
    for name in vauban.__all__:
        value = getattr(vauban, name)
        assert not isinstance(value, types.ModuleType), name
    assert callable(vauban.cut) and callable(vauban.evaluate) and callable(vauban.load)
