"""Find the shipped ``templates/``, ``static/`` and ``migrations/`` directories at runtime.

A wheel carries them inside the package (``flowstate_web/_data/<name>``, hatchling
``force-include``); an editable install or a checkout has them at the repository's top level.
"""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint

_PACKAGE = Path(__file__).resolve().parent
NAMES = ("templates", "static", "migrations")


def resource_dir(name: str) -> Path:
    """Return the directory ``name`` (one of :data:`NAMES`): installed location first.

    :raises ValueError: ``name`` is not a shipped resource directory.
    :raises FileNotFoundError: neither location has it (a broken install).
    """
    if name not in NAMES:
        raise ValueError(f"unknown resource directory {name!r} (known: {', '.join(NAMES)})")
    candidates = (_PACKAGE / "_data" / name, _PACKAGE.parent / name)
    for path in candidates:
        if path.is_dir():
            return path
    tried = ", ".join(str(p) for p in candidates)
    raise FileNotFoundError(f"flowstate-web: resource directory {name!r} not found (tried {tried})")


def shipped_blueprint(name: str, import_name: str, static_url_path: str) -> Blueprint:
    """Return a blueprint serving the shipped ``templates/`` and ``static/`` directories."""
    return Blueprint(
        name,
        import_name,
        template_folder=str(resource_dir("templates")),
        static_folder=str(resource_dir("static")),
        static_url_path=static_url_path,
    )
