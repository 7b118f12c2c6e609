"""The admin's per-app settings, read once from ``app.config`` in ``FlowState.init_app``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

#: Every config key the admin reads, with its default (documented in ``docs/admin.md``).
DEFAULTS: Final[dict[str, Any]] = {
    "FLOWSTATE_ADMIN": True,
    "FLOWSTATE_URL_PREFIX": "/flows",
    "FLOWSTATE_PUBLIC": False,
    "FLOWSTATE_READ_ONLY": False,
    "FLOWSTATE_POLL_SECONDS": 5,
    "FLOWSTATE_PAGE_SIZE": 50,
    "FLOWSTATE_BULK_BATCH_SIZE": 500,
    "FLOWSTATE_BULK_REQUEST_SECONDS": 20.0,
    "FLOWSTATE_DOT_PATH": "dot",
    "FLOWSTATE_DOT_TIMEOUT": 10.0,
    "FLOWSTATE_ARTEFACT_PREVIEW_BYTES": 4096,
    "FLOWSTATE_LOGOUT_ENDPOINT": None,
    "FLOWSTATE_REQUIRE_REASON": False,
}


@dataclass(frozen=True, slots=True)
class Settings:
    """Validated admin settings of one app (the blueprint factory's only input)."""

    enabled: bool = True
    url_prefix: str = "/flows"
    public: bool = False
    read_only: bool = False
    poll_seconds: int = 5
    page_size: int = 50
    bulk_batch_size: int = 500
    bulk_request_seconds: float = 20.0
    dot_path: str = "dot"
    dot_timeout: float = 10.0
    artefact_preview_bytes: int = 4096
    #: The host's logout view (``"auth.logout"``): the header shows a Log out button that
    #: POSTs to it with the CSRF token. ``None``: no button.
    logout_endpoint: str | None = None
    #: Manual retries, bulk actions and "fail it" refuse an empty reason (400).
    require_reason: bool = False

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Settings:
        """Return the settings in ``config`` (after ``setdefault`` of :data:`DEFAULTS`).

        :raises ValueError: a value is of the wrong type or out of range, naming the key.
        """
        prefix = str(config["FLOWSTATE_URL_PREFIX"]).rstrip("/")
        if prefix and not prefix.startswith("/"):
            raise ValueError(f"FLOWSTATE_URL_PREFIX must start with '/', got {prefix!r}")
        return cls(
            enabled=bool(config["FLOWSTATE_ADMIN"]),
            url_prefix=prefix,
            public=bool(config["FLOWSTATE_PUBLIC"]),
            read_only=bool(config["FLOWSTATE_READ_ONLY"]),
            poll_seconds=_int(config, "FLOWSTATE_POLL_SECONDS", minimum=0),
            page_size=_int(config, "FLOWSTATE_PAGE_SIZE", minimum=1),
            bulk_batch_size=_int(config, "FLOWSTATE_BULK_BATCH_SIZE", minimum=1),
            bulk_request_seconds=_float(config, "FLOWSTATE_BULK_REQUEST_SECONDS"),
            dot_path=str(config["FLOWSTATE_DOT_PATH"]),
            dot_timeout=_float(config, "FLOWSTATE_DOT_TIMEOUT"),
            artefact_preview_bytes=_int(config, "FLOWSTATE_ARTEFACT_PREVIEW_BYTES", minimum=64),
            logout_endpoint=_endpoint(config, "FLOWSTATE_LOGOUT_ENDPOINT"),
            require_reason=bool(config["FLOWSTATE_REQUIRE_REASON"]),
        )


def _int(config: dict[str, Any], key: str, *, minimum: int) -> int:
    value = config[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{key} must be an integer >= {minimum}, got {value!r}")
    return value


def _float(config: dict[str, Any], key: str) -> float:
    value = config[key]
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ValueError(f"{key} must be a number >= 0, got {value!r}")
    return float(value)


def _endpoint(config: dict[str, Any], key: str) -> str | None:
    value = config[key]
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ValueError(f"{key} must be an endpoint name like 'auth.logout', got {value!r}")
    return value
