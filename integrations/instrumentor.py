"""Auto-instrumentation: an OpenTelemetry instrumentor for the OpenAI and Anthropic SDKs.

Installed with the ``auto`` extra, it is found through the standard
``opentelemetry_instrumentor`` entry point, so an unchanged application is instrumented
by running it under ``opentelemetry-instrument``::

    pip install 'tcc-plugin[auto,openai]'
    OTEL_SERVICE_NAME=my-app opentelemetry-instrument python app.py

Every ``openai.OpenAI``, ``AsyncOpenAI``, ``anthropic.Anthropic`` and ``AsyncAnthropic``
client constructed after :meth:`TccInstrumentor.instrument` (subclasses such as
``AzureOpenAI`` included, and the copies ``with_options`` makes) goes through
:func:`tcc_plugin.instrument` as it is created: its calls are traced, priced and charged
to the active budget exactly like a client instrumented by hand. An SDK that is not
installed, or whose integration is missing, is skipped. :meth:`~TccInstrumentor.uninstrument`
restores the constructors and uninstruments the clients it instrumented.

``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=tcc_plugin`` turns it off for a run. Or in code,
before the clients are made::

    from tcc_plugin.integrations.instrumentor import TccInstrumentor
    TccInstrumentor().instrument()
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import logging
import threading
import weakref
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any, Final

try:
    from opentelemetry.instrumentation.instrumentor import (  # type: ignore[attr-defined]
        BaseInstrumentor,
    )
except ImportError as exc:  # pragma: no cover - exercised without the extra only
    raise ImportError(
        "tcc_plugin.integrations.instrumentor needs opentelemetry-instrumentation: "
        "pip install 'tcc-plugin[auto]'"
    ) from exc

__all__ = ["TARGETS", "ClientHook", "TccInstrumentor"]

_LOG = logging.getLogger("tcc_plugin")

ClientHook = Callable[[Any], Any]
"""Instruments (or uninstruments) one client in place."""

#: SDK module -> client classes made to instrument themselves when constructed.
TARGETS: Final[dict[str, tuple[str, ...]]] = {
    "openai": ("OpenAI", "AsyncOpenAI"),
    "anthropic": ("Anthropic", "AsyncAnthropic"),
}

_ORIGINAL: Final = "__tcc_original_init__"


@dataclass
class _Patch:
    cls: type
    original: Callable[..., None]


def _integration(sdk: str) -> Any:
    """``tcc_plugin.integrations.<sdk>`` if it and its SDK import; else ``None``."""
    name = f"tcc_plugin.integrations.{sdk}"
    try:
        if importlib.util.find_spec(sdk) is None or importlib.util.find_spec(name) is None:
            return None
        return importlib.import_module(name)
    except Exception:
        _LOG.warning("tcc_plugin: cannot load %s (not instrumented)", name, exc_info=True)
        return None


def _default_wrap() -> ClientHook | None:
    try:
        from tcc_plugin.instrument import instrument
    except ImportError:
        return None
    return instrument


class TccInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    """Makes every new OpenAI and Anthropic client go through :func:`tcc_plugin.instrument`.

    ``instrument()`` takes optional keyword arguments: ``wrap`` (an in-place hook called
    with each new client, instead of :func:`tcc_plugin.instrument`) and ``unwrap`` (its
    undo, called by ``uninstrument()`` on the clients still alive; by default the
    integration's ``uninstrument``). A hook that raises is logged and the client left
    as it is: instrumentation never breaks the application.
    """

    _lock = threading.Lock()
    # Class-level defaults: BaseInstrumentor is a singleton without an __init__ of ours.
    _patches: tuple[_Patch, ...] = ()
    _clients: weakref.WeakSet[Any] | None = None
    _unwrap: ClientHook | None = None

    def instrumentation_dependencies(self) -> Collection[str]:
        # Whichever of openai and anthropic is installed is instrumented; neither is
        # required, so none is declared (a declared one would veto the other).
        return ()

    @property
    def patched(self) -> tuple[type, ...]:
        """The client classes whose constructors are patched now."""
        return tuple(patch.cls for patch in self._patches)

    def _instrument(self, **kwargs: Any) -> None:
        wrap: ClientHook | None = kwargs.get("wrap") or _default_wrap()
        unwrap: ClientHook | None = kwargs.get("unwrap")
        if wrap is None:  # pragma: no cover - tcc_plugin.instrument ships with the package
            _LOG.warning("tcc_plugin: no tcc_plugin.instrument; clients are not instrumented")
            return
        clients: weakref.WeakSet[Any] = weakref.WeakSet()
        patches: list[_Patch] = []
        with self._lock:
            for sdk, class_names in TARGETS.items():
                integration = _integration(sdk)
                if integration is None:
                    continue
                module = importlib.import_module(sdk)
                for class_name in class_names:
                    cls = getattr(module, class_name, None)
                    if isinstance(cls, type):
                        patches.append(_patch(cls, wrap, clients))
        self._patches = tuple(patches)
        self._clients = clients
        self._unwrap = unwrap

    def _uninstrument(self, **kwargs: Any) -> None:
        with self._lock:
            for patch in reversed(self._patches):
                patch.cls.__init__ = patch.original  # type: ignore[misc]
            self._patches = ()
            clients = list(self._clients or ())
            self._clients = None
        unwrap = self._unwrap
        for client in clients:
            undo = unwrap or _uninstrument_for(client)
            if undo is not None:
                _call_quietly(undo, client, "uninstrument")


def _uninstrument_for(client: Any) -> ClientHook | None:
    for cls in type(client).__mro__:
        sdk = (cls.__module__ or "").split(".", 1)[0]
        if sdk in TARGETS:
            integration = _integration(sdk)
            hook = getattr(integration, "uninstrument", None)
            return hook if callable(hook) else None
    return None


def _patch(cls: type, wrap: ClientHook, clients: weakref.WeakSet[Any]) -> _Patch:
    original: Callable[..., None] = vars(cls)["__init__"]
    original = getattr(original, _ORIGINAL, original)  # never wrap our own wrapper

    @functools.wraps(original)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        if _call_quietly(wrap, self, "instrument"):
            clients.add(self)

    setattr(__init__, _ORIGINAL, original)
    cls.__init__ = __init__  # type: ignore[misc]
    return _Patch(cls, original)


def _call_quietly(hook: ClientHook, client: Any, what: str) -> bool:
    try:
        result = hook(client)
    except Exception:
        _LOG.warning(
            "tcc_plugin: could not %s a %s client (left as it is)",
            what,
            type(client).__qualname__,
            exc_info=True,
        )
        return False
    if result is not None and result is not client:
        _LOG.warning(
            "tcc_plugin: %s() returned a new object for a %s client; auto-instrumentation "
            "needs in-place instrumentation, so this client is not covered",
            what,
            type(client).__qualname__,
        )
        return False
    return True
