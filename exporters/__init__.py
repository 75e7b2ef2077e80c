"""Exporters shipped with tcc-plugin (installed as ``tcc_plugin.exporters``)."""

from tcc_plugin.exporters.jsonl import (
    JsonLinesMetricExporter,
    JsonLinesSpanExporter,
    read_metrics,
    read_spans,
)

__all__ = ["JsonLinesMetricExporter", "JsonLinesSpanExporter", "read_metrics", "read_spans"]
