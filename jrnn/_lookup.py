"""Keras' ``get(identifier)`` for regularizers and constraints: a name, a config dict, a callable
or None."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from jrnn._errors import message


def lookup(identifier, factories: Mapping[str, Callable], arg: str):
    """``None`` stays None; a Keras name or ``{"class_name", "config"}`` builds from ``factories``;
    a callable is returned as is; anything else is an error naming ``arg``."""
    if identifier is None:
        return None
    if isinstance(identifier, dict) and identifier.get("class_name") in factories:
        return factories[identifier["class_name"]](**(identifier.get("config") or {}))
    if isinstance(identifier, str) and identifier in factories:
        return factories[identifier]()
    if callable(identifier) and not isinstance(identifier, (str, dict)):
        return identifier
    raise ValueError(message(arg, f"one of {sorted(factories)}, a config dict, a callable or None", repr(identifier)))
