"""The batch manifest: one job a row (CSV with a header, or JSON lines), checked before anything runs.

Columns (keys in JSONL): ``kind`` (dub, generate or render), the inputs ``video``, ``image``, ``identity``,
``audio``, the output ``out`` (an ``.mp4`` path relative to the output root) and the optional settings
``renderer``, ``preset``, ``transcript``, ``timeline``, ``face``. A column a manifest does not need may be
left out; an empty cell means the default. Relative input paths are read from the manifest's own folder.

Every row is checked first and each problem reported with its line and field; the rows without problems
run. A row can only make this project's own jobs run (:data:`KINDS`), and its output must resolve inside
the output root (no ``..``, no absolute path, no symlink leading out of it, not over an input, not the
output of another row).
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from common.config import from_dict, load_config, to_dict
from common.errors import InputError

INPUTS = ("video", "image", "identity", "audio")
SETTINGS = ("renderer", "preset", "transcript", "timeline", "face")
COLUMNS = ("kind", *INPUTS, "out", *SETTINGS)
# What each kind needs and what it may take; any other filled-in column is reported (it would be ignored).
REQUIRED = {"dub": ("video", "audio"), "generate": ("image", "audio"), "render": ("identity", "audio")}
OPTIONAL = {
    "dub": ("identity", "renderer", "preset", "transcript", "timeline", "face"),
    "generate": ("renderer", "transcript"),
    "render": ("renderer", "transcript"),
}
KINDS = tuple(REQUIRED)
# Names under the output root that belong to the batch itself.
RESERVED = ("batch.sqlite", "batch.sqlite-wal", "batch.sqlite-shm", "batch.lock", "report.csv", "report.json")
RESERVED_FOLDERS = ("logs",)


def config_type(kind: str) -> type:
    """The settings dataclass of a job kind."""
    if kind == "dub":
        from pipeline.dub import DubConfig

        return DubConfig
    if kind == "generate":
        from pipeline.oneshot import GenerateConfig

        return GenerateConfig
    from pipeline.identity_render import IdentityRenderConfig

    return IdentityRenderConfig


@dataclass
class Problem:
    """What is wrong with one row (``line`` 0: the manifest as a whole)."""

    line: int
    field: str
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.field}: {self.message}"


@dataclass
class Job:
    """A checked row, ready to run: everything a worker needs, as plain values."""

    id: str
    line: int
    kind: str
    out: str
    """The output path relative to the output root, as the row gives it."""
    out_path: str
    """The output's absolute path."""
    inputs: dict[str, str]
    """The row's input files (absolute) and ``identity`` (a name)."""
    config: dict[str, Any]
    """The kind's settings (``to_dict`` of its config dataclass)."""
    transcript: str | None = None
    workspace: str | None = None
    """The identities' root folder (None: the default)."""
    row: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class Manifest:
    jobs: list[Job]
    problems: list[Problem]
    invalid: dict[int, dict[str, str]]
    """The raw cells of each row with a problem, by line."""


def _flatten(data: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    items: list[tuple[str, Any]] = []
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            items += _flatten(value, name + ".")
        else:
            items.append((name, value))
    return items


def base_overrides(config_file: str | os.PathLike | None, sets: list[str]) -> dict[str, list[str]]:
    """``--config`` and ``--set`` as ``key=value`` overrides per job kind.

    A key may name its kind first (``generate.size=256``, or a ``generate:`` section in the YAML); a key
    without one goes to every kind whose settings have it (``crf=20``), and a key no kind has is an error.
    """
    pairs: list[tuple[str, str]] = []
    if config_file:
        from common.config import CONFIG_DIR

        path = Path(config_file)
        if not path.is_file() and (CONFIG_DIR / path).is_file():
            path = CONFIG_DIR / path
        if not path.is_file():
            raise InputError(f"--config file not found: {config_file}", "give the path of a YAML file")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise InputError(f"--config {path} is not valid YAML", "fix the file") from exc
        if not isinstance(data, dict):
            raise InputError(f"--config {path} must hold a mapping", "fix the file")
        pairs += [(k, json.dumps(v)) for k, v in _flatten(data)]
    for item in sets:
        if "=" not in item:
            raise InputError(f"--set {item!r} is not key=value", "write it as --set crf=20")
        key, value = item.split("=", 1)
        pairs.append((key.strip(), value))
    out: dict[str, list[str]] = {kind: [] for kind in KINDS}
    fields = {kind: {f.name for f in dataclasses.fields(config_type(kind))} for kind in KINDS}
    for key, value in pairs:
        head, _, rest = key.partition(".")
        if head in KINDS and rest:
            out[head].append(f"{rest}={value}")
            continue
        takers = [kind for kind in KINDS if head in fields[kind]]
        if not takers:
            raise InputError(
                f"setting {key!r} belongs to no job kind",
                f"name a setting of dub, generate or render (or prefix one: {KINDS[0]}.{key})",
            )
        for kind in takers:
            out[kind].append(f"{key}={value}")
    for kind in KINDS:  # a bad value fails now, once, not in every row
        load_config(config_type(kind), None, out[kind])
    return out


def _read_rows(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """(line, cells) of each row; a line that cannot be read at all gets ``{"__error__": why}``."""
    rows: list[tuple[int, dict[str, Any]]] = []
    text = path.read_text(encoding="utf-8-sig")
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        for line, raw in enumerate(text.splitlines(), 1):
            if not raw.strip():
                continue
            try:
                row = json.loads(raw)
            except json.JSONDecodeError as exc:
                rows.append((line, {"__error__": f"not valid JSON ({exc.msg})"}))
                continue
            if not isinstance(row, dict):
                rows.append((line, {"__error__": "a JSON object per line is expected"}))
                continue
            rows.append((line, row))
        return rows
    if path.suffix.lower() != ".csv":
        raise InputError(
            f"manifest {path} is neither .csv nor .jsonl", "give a CSV with a header, or JSON lines"
        )
    reader = csv.DictReader(text.splitlines())
    if not reader.fieldnames:
        raise InputError(f"manifest {path} is empty", "give a header row and one row per job")
    names = [n.strip() for n in reader.fieldnames]
    unknown = [n for n in names if n not in COLUMNS]
    if unknown:
        raise InputError(
            f"manifest {path} has unknown column(s) {', '.join(map(repr, unknown))}",
            f"use only {', '.join(COLUMNS)}",
        )
    for name in ("kind", "out"):
        if name not in names:
            raise InputError(f"manifest {path} has no {name!r} column", "add it to the header row")
    reader.fieldnames = names
    for row in reader:
        if not any((v or "").strip() for v in row.values() if isinstance(v, str)):
            continue
        if None in row:
            rows.append((reader.line_num, {"__error__": "more cells than the header has columns"}))
            continue
        rows.append((reader.line_num, row))
    return rows


def _transcript(here: Path, value: str) -> str:
    """A ``transcript`` cell: the text of the file it names (relative to the manifest), or the text itself."""
    try:
        file = here / value
        return file.read_text() if file.is_file() else value
    except (OSError, ValueError):  # text too long or odd to be a path
        return value


def _input_problem(path: Path) -> str | None:
    if not path.exists():
        return f"file not found: {path}"
    if not path.is_file():
        return f"not a file: {path}"
    if not os.access(path, os.R_OK):
        return f"not readable: {path}"
    if path.stat().st_size == 0:
        return f"empty file: {path}"
    return None


def _out_problem(out: str, root: Path) -> tuple[str | None, Path | None]:
    """(why ``out`` cannot be written, None) or (None, its resolved absolute path)."""
    if not out:
        return "missing (the output path relative to --out-root)", None
    raw = Path(out)
    if raw.is_absolute() or out.startswith("~") or (len(out) > 1 and out[1] == ":"):
        return f"{out!r} is absolute; give a path relative to --out-root", None
    if ".." in raw.parts:
        return f"{out!r} contains '..'; outputs stay inside --out-root", None
    if raw.suffix.lower() != ".mp4":
        return f"{out!r} does not end in .mp4", None
    if raw.parts[0] in RESERVED_FOLDERS or out in RESERVED:
        return f"{out!r} is where the batch keeps its own files", None
    resolved = (root / raw).resolve()
    if root not in resolved.parents:
        return f"{out!r} resolves to {resolved}, outside --out-root (a symlink leads out)", None
    return None, resolved


def _setting_problem(kind: str, name: str, value: str) -> str | None:
    from renderers import registry

    if name == "renderer":
        allowed = {
            "dub": ("auto", "warp", *registry.trainable_names()),
            "generate": registry.portrait_names(),
            "render": registry.trainable_names(),
        }[kind]
        if value not in allowed:
            return f"{value!r} is not a {kind} renderer (use {', '.join(allowed)})"
    if name == "timeline" and value not in ("pingpong", "loop", "cut"):
        return f"{value!r} is not pingpong, loop or cut"
    if name == "face":
        from pipeline.face_follow import parse_point

        try:
            parse_point(value)
        except InputError as err:
            return err.message
    if name == "preset":
        from common.config import CONFIG_DIR

        return None if list(CONFIG_DIR.glob(f"*_{value}.yaml")) else f"no preset named {value!r} in configs/"
    return None


def read_manifest(
    path: str | os.PathLike,
    out_root: str | os.PathLike,
    base: dict[str, list[str]] | None = None,
    workspace: str | os.PathLike | None = None,
) -> Manifest:
    """Check every row of the manifest at ``path`` and return the jobs of the good ones and the problems."""
    from pipeline.workspace import IDENTITY_FILE, identity_dir

    path = Path(path)
    if not path.is_file():
        raise InputError(f"manifest not found: {path}", "give the path of a .csv or .jsonl file")
    here = path.resolve().parent
    root = Path(out_root).expanduser().resolve()
    base = base or {kind: [] for kind in KINDS}
    jobs: list[Job] = []
    problems: list[Problem] = []
    invalid: dict[int, dict[str, str]] = {}
    outs: dict[Path, int] = {}
    for line, cells in _read_rows(path):
        found: list[Problem] = []
        if "__error__" in cells:
            problems.append(Problem(line, "row", cells["__error__"]))
            invalid[line] = {}
            continue
        row = {str(k).strip(): ("" if v is None else str(v).strip()) for k, v in cells.items()}
        for key in row:
            if key not in COLUMNS:
                found.append(Problem(line, key, f"unknown key (use {', '.join(COLUMNS)})"))
        kind = row.get("kind", "")
        if kind not in KINDS:
            found.append(Problem(line, "kind", f"{kind!r} is not a job kind (use dub, generate or render)"))
        else:
            for name in REQUIRED[kind]:
                if not row.get(name):
                    found.append(
                        Problem(line, name, f"missing: a {kind} row needs {' and '.join(REQUIRED[kind])}")
                    )
            for name in (*INPUTS, *SETTINGS):
                if row.get(name) and name not in REQUIRED[kind] + OPTIONAL[kind]:
                    found.append(Problem(line, name, f"a {kind} row does not take {name}"))
        inputs: dict[str, str] = {}
        for name in ("video", "image", "audio"):
            if row.get(name) and (kind not in KINDS or name in REQUIRED[kind] + OPTIONAL[kind]):
                file = (here / Path(row[name]).expanduser()).resolve()
                why = _input_problem(file)
                if why:
                    found.append(Problem(line, name, why))
                inputs[name] = str(file)
        if row.get("identity"):
            try:
                folder = identity_dir(row["identity"], workspace)
                inputs["identity"] = row["identity"]
                if kind == "render" and not (folder / IDENTITY_FILE).is_file():
                    found.append(Problem(line, "identity", f"no prepared identity at {folder}"))
            except InputError as err:
                found.append(Problem(line, "identity", err.message))
        why, resolved = _out_problem(row.get("out", ""), root)
        if why:
            found.append(Problem(line, "out", why))
        elif resolved is not None:
            if resolved in outs:
                found.append(
                    Problem(line, "out", f"{row['out']!r} is also the output of line {outs[resolved]}")
                )
            elif str(resolved) in inputs.values():
                found.append(Problem(line, "out", f"{row['out']!r} is one of the row's inputs"))
            else:
                outs[resolved] = line
        transcript = None
        if kind in KINDS:
            for name in SETTINGS:
                if row.get(name) and name != "transcript":
                    why = _setting_problem(kind, name, row[name])
                    if why:
                        found.append(Problem(line, name, why))
            if row.get("transcript"):
                transcript = _transcript(here, row["transcript"])
        config: dict[str, Any] = {}
        if not found:
            overrides = list(base[kind])
            overrides += [
                f"{k}={json.dumps(row[k])}" for k in ("renderer", "preset", "timeline", "face") if row.get(k)
            ]
            if kind == "dub" and row.get("identity"):
                overrides.append(f"identity={json.dumps(row['identity'])}")
            try:
                config = to_dict(load_config(config_type(kind), None, overrides))
            except InputError as err:
                found.append(Problem(line, "settings", err.message))
        if found:
            problems += found
            invalid[line] = row
            continue
        digest = hashlib.sha256(
            json.dumps([row, inputs, config, transcript], sort_keys=True).encode()
        ).hexdigest()[:10]
        jobs.append(
            Job(
                id=f"{line:05d}-{digest}",
                line=line,
                kind=kind,
                out=row["out"],
                out_path=str(resolved),
                inputs=inputs,
                config=config,
                transcript=transcript,
                workspace=None if workspace is None else str(Path(workspace).resolve()),
                row=row,
            )
        )
    # a row may not read what another row writes: the order the jobs run in is not the manifest's
    written = {str(path): line for path, line in outs.items()}
    for job in list(jobs):
        clash = [(k, v) for k, v in job.inputs.items() if k != "identity" and v in written]
        if clash:
            name, path = clash[0]
            problems.append(Problem(job.line, name, f"{path} is the output of line {written[path]}"))
            invalid[job.line] = job.row
            jobs.remove(job)
    problems.sort(key=lambda p: p.line)
    return Manifest(jobs, problems, invalid)


def job_config(job: Job | dict[str, Any]) -> Any:
    """The job's settings as its kind's config dataclass."""
    data = job if isinstance(job, dict) else job.to_dict()
    return from_dict(config_type(data["kind"]), data["config"])
