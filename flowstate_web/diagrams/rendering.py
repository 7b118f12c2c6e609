"""Run Graphviz's ``dot`` on DOT text, with a timeout and a content-hash cache.

Rendering never raises: a missing ``dot``, a non-zero exit or a timeout gives a result
carrying the error text and the DOT source, so a page can show both instead of failing.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Final, Literal

Format = Literal["svg", "png"]
FORMATS: Final[tuple[str, ...]] = ("svg", "png")
DEFAULT_EXECUTABLE: Final = "dot"
DEFAULT_TIMEOUT: Final = 10.0
CACHE_SIZE: Final = 128
INSTALL_HINT: Final = (
    "Install Graphviz to draw state diagrams: `apt-get install graphviz` (Debian/Ubuntu),"
    " `brew install graphviz` (macOS), or see https://graphviz.org/download/."
)

_PROLOG = re.compile(r"\A.*?(?=<svg\b)", re.DOTALL)


@dataclass(frozen=True, slots=True)
class Rendered:
    """An SVG ready to inline in HTML (``svg``), or the reason there is none (``error``)."""

    dot_source: str
    svg: str | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class RenderedBytes:
    """The output of ``dot -T<fmt>`` (``data``), or the reason there is none (``error``)."""

    dot_source: str
    fmt: str
    data: bytes | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class _Outcome:
    data: bytes | None
    error: str | None
    cacheable: bool = True


class _Cache:
    """A bounded LRU map, safe to share between threads, rendering each key at most once."""

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self._items: OrderedDict[tuple[str, str, str], _Outcome] = OrderedDict()
        self._lock = threading.Lock()
        self._inflight: dict[tuple[str, str, str], threading.Lock] = {}

    def get(self, key: tuple[str, str, str]) -> _Outcome | None:
        with self._lock:
            hit = self._items.get(key)
            if hit is not None:
                self._items.move_to_end(key)
            return hit

    def put(self, key: tuple[str, str, str], value: _Outcome) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.maxsize:
                self._items.popitem(last=False)

    def key_lock(self, key: tuple[str, str, str]) -> threading.Lock:
        with self._lock:
            return self._inflight.setdefault(key, threading.Lock())

    def release_key(self, key: tuple[str, str, str]) -> None:
        with self._lock:
            self._inflight.pop(key, None)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)


_cache = _Cache(CACHE_SIZE)


def clear_cache() -> None:
    """Forget every cached rendering (e.g. after upgrading Graphviz)."""
    _cache.clear()


def cache_size() -> int:
    """Return how many renderings are cached."""
    return len(_cache)


def dot_hash(dot_source: str) -> str:
    """Return the sha256 hex digest of ``dot_source``: the cache key of its renderings."""
    return hashlib.sha256(dot_source.encode("utf-8")).hexdigest()


def _run_dot(cmd: list[str], source: bytes, timeout: float) -> subprocess.CompletedProcess[bytes]:
    """Spawn ``dot`` (the only place a process is started; tests count calls here)."""
    return subprocess.run(cmd, input=source, capture_output=True, timeout=timeout, check=False)


def _execute(dot_source: str, fmt: str, timeout: float, executable: str) -> _Outcome:
    """Render once; return the outcome and never raise."""
    try:
        proc = _run_dot([executable, f"-T{fmt}"], dot_source.encode("utf-8"), timeout)
    except FileNotFoundError:
        # Not cached: installing Graphviz fixes the page without a restart.
        msg = f"Graphviz executable {executable!r} was not found. {INSTALL_HINT}"
        return _Outcome(None, msg, cacheable=False)
    except subprocess.TimeoutExpired:
        return _Outcome(
            None,
            f"Graphviz {executable!r} did not finish within {timeout:g} s; the diagram is too"
            " large or the server is overloaded.",
        )
    except OSError as exc:
        msg = f"Graphviz {executable!r} could not be run: {exc}. {INSTALL_HINT}"
        return _Outcome(None, msg, cacheable=False)
    if proc.returncode != 0:
        stderr = proc.stderr.decode("utf-8", "replace").strip()
        return _Outcome(None, f"Graphviz {executable!r} exited with {proc.returncode}: {stderr}")
    return _Outcome(proc.stdout, None)


def _cached(
    dot_source: str, fmt: str, timeout: float, executable: str | os.PathLike[str]
) -> _Outcome:
    exe = os.fspath(executable)
    key = (dot_hash(dot_source), fmt, exe)
    hit = _cache.get(key)
    if hit is not None:
        return hit
    # One render per key even when many requests arrive at once on a cold cache.
    with _cache.key_lock(key):
        try:
            hit = _cache.get(key)
            if hit is not None:
                return hit
            outcome = _execute(dot_source, fmt, timeout, exe)
            # Timeouts are cached too, so a polling page does not start a slow dot each time.
            if outcome.cacheable:
                _cache.put(key, outcome)
        finally:
            _cache.release_key(key)
    return outcome


def render(
    dot_source: str,
    fmt: str = "svg",
    *,
    timeout: float = DEFAULT_TIMEOUT,
    executable: str | os.PathLike[str] = DEFAULT_EXECUTABLE,
) -> RenderedBytes:
    """Return ``dot -T<fmt>`` of ``dot_source`` (``fmt`` is ``svg`` or ``png``), cached.

    Never raises for rendering problems; check ``error``. ``ValueError`` for another ``fmt``.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unsupported diagram format {fmt!r} (use one of {', '.join(FORMATS)})")
    out = _cached(dot_source, fmt, timeout, executable)
    return RenderedBytes(dot_source=dot_source, fmt=fmt, data=out.data, error=out.error)


def render_svg(
    dot_source: str,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    executable: str | os.PathLike[str] = DEFAULT_EXECUTABLE,
) -> Rendered:
    """Return the SVG of ``dot_source`` without XML prolog or doctype, to inline in HTML.

    Cached by the DOT's sha256: after the first call for a given DOT, no process is spawned.
    Never raises; on failure ``svg`` is ``None`` and ``error`` says why.
    """
    out = _cached(dot_source, "svg", timeout, executable)
    if out.data is None:
        return Rendered(dot_source=dot_source, error=out.error)
    text = out.data.decode("utf-8", "replace")
    stripped = _PROLOG.sub("", text, count=1)
    if not stripped.startswith("<svg"):
        return Rendered(dot_source=dot_source, error="Graphviz produced no <svg> element")
    return Rendered(dot_source=dot_source, svg=stripped)
