"""Telemetry: attribute names, the call recorder and the exporter setup.

The public entry point is ``tcc_plugin.configure``; ``tcc_plugin.telemetry.configure`` is
the module that implements it. Nothing here imports the OpenTelemetry SDK until the
setup is asked for.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tcc_plugin.telemetry.configure import TelemetryHandle

__all__ = ["TelemetryHandle"]


def __getattr__(name: str) -> Any:
    # Only TelemetryHandle: the name ``configure`` is the submodule, as its importers expect.
    if name == "TelemetryHandle":
        from tcc_plugin.telemetry.configure import TelemetryHandle

        return TelemetryHandle
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
