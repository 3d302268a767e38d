"""The configuration schema (SPEC.md "Configuration") as msgspec Structs.

Every key is optional and defaults to SPEC.md. Unknown keys and wrong types are
errors that name the YAML path, because a typo that silently falls back to a
default is the worst kind of configuration bug.
"""

from __future__ import annotations

import codecs
import os
import re
import string
import typing
import unicodedata
from pathlib import Path
from typing import Any, Literal

import msgspec
import yaml

from keysync.config_yaml import (
    SafeLoaderNoDuplicates,
    check_null_is_written,
    line_of,
    quote_hint,
    refuse_yaml11_numbers,
    type_hint,
)
from keysync.cron import CronError, CronSchedule
from keysync.errors import ConfigError, bytes_shown

DEFAULT_CONFIG_PATH = "keysync-config.yaml"


class _Section(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Base for every config section: unknown keys are errors."""


class NormalizeConfig(_Section):
    trim: bool = True
    ascii_fold: bool = True
    uppercase: bool = True
    collapse_delims: str | None = "-"
    delimiters: str = " \t-_./:|\\"
    strip_non_alnum: bool = True
    pad_numbers: int = 0


class ProvisioningConfig(_Section):
    strategy: Literal["mirror", "namespaced"] = "mirror"
    namespace_separator: str = ":"
    auto_approve: bool = False
    deprecate_after_runs: int = 3


DEFAULT_TIMESTAMP_COLUMN = "last_seen_at"


class SourceConfig(_Section):
    path: str
    type: Literal["csv"] = "csv"
    key_column: str = "key"
    delimiter: str = ","
    encoding: str = "utf-8"
    timestamp_column: str = DEFAULT_TIMESTAMP_COLUMN


class TemporalConfig(_Section):
    simulate_history: bool = True
    days_of_history: int = 30


class FailuresConfig(_Section):
    inject_corruption: float = 0.01
    simulate_timeout: bool = False


class SimulationConfig(_Section):
    seed: int = 42
    keys_per_system: int | None = None
    scenario: Literal["normal", "drift", "failure", "recovery"] = "normal"
    temporal: TemporalConfig = msgspec.field(default_factory=TemporalConfig)
    failures: FailuresConfig = msgspec.field(default_factory=FailuresConfig)
    alert_threshold: float = 0.10


class ProcessingConfig(_Section):
    mode: Literal["full", "incremental"] = "full"
    batch_size: int = 1000
    parallel: bool = True
    workers: int | None = None
    checkpoint_interval: int = 5000
    source_timeout_s: float = 30.0  # a float, so it prints as one given or not
    max_key_length: int = 256


class PathsConfig(_Section):
    output: str = "./output"
    data: str = "./data"
    checkpoints: str = "./checkpoints"


class LoggingConfig(_Section):
    level: Literal["debug", "info", "warning", "error"] = "info"
    file: str = "./data/logs/keysync.jsonl"


def _default_sources() -> dict[str, SourceConfig]:
    return {name: SourceConfig(path=f"./input/{name}.csv") for name in "ABCDE"}


class Config(_Section):
    schedule: str = "0 2 * * *"
    normalize: NormalizeConfig = msgspec.field(default_factory=NormalizeConfig)
    provisioning: ProvisioningConfig = msgspec.field(default_factory=ProvisioningConfig)
    sources: dict[str, SourceConfig] = msgspec.field(default_factory=_default_sources)
    simulation: SimulationConfig = msgspec.field(default_factory=SimulationConfig)
    processing: ProcessingConfig = msgspec.field(default_factory=ProcessingConfig)
    paths: PathsConfig = msgspec.field(default_factory=PathsConfig)
    logging: LoggingConfig = msgspec.field(default_factory=LoggingConfig)
    # Folder of the config file; relative paths resolve against it. Not part of the YAML.
    base_dir: str = "."

    def resolve(self, path: str) -> Path:
        """A configured path, made absolute against the config file's folder."""
        candidate = Path(path).expanduser()
        return candidate if candidate.is_absolute() else Path(self.base_dir) / candidate

    @property
    def authority(self) -> str:
        """The authoritative system: the first source (``A`` by convention)."""
        return next(iter(self.sources))

    @property
    def output_dir(self) -> Path:
        return self.resolve(self.paths.output)

    @property
    def data_dir(self) -> Path:
        return self.resolve(self.paths.data)

    @property
    def checkpoint_dir(self) -> Path:
        return self.resolve(self.paths.checkpoints)

    @property
    def log_file(self) -> Path:
        return self.resolve(self.logging.file)

    def source_path(self, system: str) -> Path:
        return self.resolve(self.sources[system].path)

    def key_rules(self) -> dict[str, Any]:
        """The settings that shape keys, by their config names: what a change of makes
        keys take other forms (``rules.changed``, a refused resume, ``registry rekey``)."""
        normalize: dict[str, Any] = msgspec.to_builtins(self.normalize)
        rules = {f"normalize.{name}": value for name, value in normalize.items()}
        rules["processing.max_key_length"] = self.processing.max_key_length
        return rules

    def to_yaml(self) -> str:
        """The effective configuration, every default filled in, as YAML.

        Characters as they are where that reads back the same; else every non-ASCII one
        escaped: PyYAML writes U+0085 (NEL) bare inside quotes, where reading folds it
        into a space, so `config check > full.yaml` changed ``delimiters``."""
        data = msgspec.to_builtins(self)
        data.pop("base_dir", None)
        text = str(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
        if yaml.safe_load(text) != data:
            text = str(yaml.safe_dump(data, sort_keys=False, allow_unicode=False))
        return text


_SYSTEM_NAME = re.compile(r"[A-Za-z0-9_]+")
# A separator must survive the rules it is part of: a letter would be uppercased or
# stripped, an accented char folded, so keys would change on a second pass.
_SEPARATORS = string.punctuation + " "
_NAME_CHARS = frozenset(string.ascii_letters + string.digits + "_")


def _codec_named(name: str) -> bool:
    try:
        codecs.lookup(name)
    except LookupError:
        return False
    return True


def _ascii_compatible(encoding: str) -> bool:
    """Whether ``encoding`` writes every printable ASCII character as that one byte.

    The reader splits raw bytes on ``\n`` and the delimiter before decoding, so
    UTF-16/32 or EBCDIC would never work. A byte-order mark before the first
    character (``utf-8-sig``) is fine: the reader skips it.
    """
    text = string.printable
    try:
        encoder = codecs.getincrementalencoder(encoding)()
        encoder.encode(text[:1])
        return bool(encoder.encode(text[1:]) == text[1:].encode("ascii"))
    except (LookupError, UnicodeError, TypeError):
        return False


def _check_paths_are_text(config: Config) -> None:
    """Every path as UTF-8 text: reports, checkpoints, the state and the logs hold them.

    A folder named with bytes that are not UTF-8 (``bad\\xffdir``) reaches Python as
    lone surrogates, which no encoder takes: the run failed with a traceback after
    reading everything, or after its commit."""
    named = {f"sources.{name}.path": config.source_path(name) for name in config.sources}
    named |= {
        "paths.output": config.output_dir,
        "paths.data": config.data_dir,
        "paths.checkpoints": config.checkpoint_dir,
        "logging.file": config.log_file,
    }
    for where, path in named.items():
        if (shown := bytes_shown(str(path))) != str(path):
            raise ConfigError(
                f"{where}: '{shown}' is not UTF-8 text (a folder name holds other bytes); "
                "keysync writes its paths into reports and state: rename the folder, or give "
                "a path that is"
            )


def _validate(config: Config) -> None:
    """Rules that types alone cannot express; each message names its YAML path."""
    _check_paths_are_text(config)
    _check_one_file_per_source(config)
    try:
        CronSchedule(config.schedule)
    except CronError as exc:
        raise ConfigError(f"schedule: invalid cron expression {config.schedule!r}: {exc}") from None
    positive = {
        "processing.batch_size": config.processing.batch_size,
        "processing.checkpoint_interval": config.processing.checkpoint_interval,
        "processing.max_key_length": config.processing.max_key_length,
        "processing.source_timeout_s": config.processing.source_timeout_s,
        "simulation.temporal.days_of_history": config.simulation.temporal.days_of_history,
        "provisioning.deprecate_after_runs": config.provisioning.deprecate_after_runs,
    }
    if config.processing.workers is not None:
        positive["processing.workers"] = config.processing.workers
    if config.simulation.keys_per_system is not None:
        positive["simulation.keys_per_system"] = config.simulation.keys_per_system
    for path, value in positive.items():
        if not value > 0:  # also NaN, which compares false with everything
            raise ConfigError(f"{path}: must be greater than 0, got {value}")
    caps = {
        "processing.workers": (config.processing.workers or 0, MAX_WORKERS, "processes"),
        "processing.max_key_length": (
            config.processing.max_key_length,
            MAX_KEY_LENGTH,
            "characters (a key cell is read whole)",
        ),
    }
    # Every bound of its own before the 64-bit one, which is looser: a user who fixes the
    # value the first message asks for must not meet a second bound.
    for path, (value, cap, unit) in caps.items():
        if value > cap:
            raise ConfigError(f"{path}: must be at most {cap} {unit}, got {value}")
    days = config.simulation.temporal.days_of_history
    if days > MAX_DAYS_OF_HISTORY:
        raise ConfigError(
            f"simulation.temporal.days_of_history: must be at most {MAX_DAYS_OF_HISTORY} "
            f"(ten years), got {days}"
        )
    _check_pad_numbers(config)
    _check_int_range(msgspec.to_builtins(config), "")
    locations = {
        "paths.output": config.paths.output,
        "paths.data": config.paths.data,
        "paths.checkpoints": config.paths.checkpoints,
        "logging.file": config.logging.file,
    }
    for where, location in locations.items():
        if not location.strip():
            hint = "" if where == "logging.file" else " (./ is the config file's folder)"
            raise ConfigError(f"{where}: must not be empty{hint}")
    _check_log_file_is_a_file_name(config.logging.file)
    separator = config.provisioning.namespace_separator
    if not separator or any(c in _NAME_CHARS or not c.isprintable() for c in separator):
        raise ConfigError(
            "provisioning.namespace_separator: must be one or more printable characters "
            "that cannot occur in a system name (not letters, digits or _), so that "
            f"<system><separator><key> names one system and key, got {separator!r}"
        )
    collapse = config.normalize.collapse_delims
    if collapse is not None and (len(collapse) != 1 or collapse not in _SEPARATORS):
        raise ConfigError(
            "normalize.collapse_delims: must be null or one ASCII punctuation character or "
            f"a space, got {collapse!r}"
        )
    if keyish := [c for c in config.normalize.delimiters if c.isalnum()]:  # any script: é, ², ß
        named = ", ".join(f"{c!r} (U+{ord(c):04X} {unicodedata.name(c, '?')})" for c in keyish)
        raise ConfigError(
            "normalize.delimiters: must not contain letters or digits (they are key "
            f"characters), got {config.normalize.delimiters!r}: {named}"
        )
    rates = {
        "simulation.failures.inject_corruption": config.simulation.failures.inject_corruption,
        "simulation.alert_threshold": config.simulation.alert_threshold,
    }
    for path, rate in rates.items():
        if not 0 <= rate <= 1:
            raise ConfigError(f"{path}: must be within 0-1, got {rate}")
    if not config.sources:
        raise ConfigError("sources: none given; list the authority first, then at least one peer")
    if len(config.sources) < 2:
        raise ConfigError("sources: the authority needs at least one peer to compare with")
    for name, source in config.sources.items():
        if not source.path.strip():
            raise ConfigError(f"sources.{name}.path: must not be empty")
        if len(source.delimiter) != 1 or source.delimiter in '"\r\n':
            raise ConfigError(
                f"sources.{name}.delimiter: must be one character other than a quote or a "
                f"line break, got {source.delimiter!r}"
            )
        if not source.key_column:
            raise ConfigError(f"sources.{name}.key_column: must not be empty")
        try:
            "".encode(source.encoding)
        except LookupError:
            known = _codec_named(source.encoding)  # rot13, base64: Python knows them
            raise ConfigError(
                f"sources.{name}.encoding: {source.encoding!r} is not a text encoding (it "
                "turns text into text, or bytes into bytes); give the one the export is "
                "written in: utf-8, latin-1, cp1252..."
                if known
                else f"sources.{name}.encoding: unknown encoding {source.encoding!r}"
            ) from None
        if not _ascii_compatible(source.encoding):
            raise ConfigError(
                f"sources.{name}.encoding: {source.encoding!r} is not supported: keysync "
                "splits the bytes on ASCII line breaks and delimiters, so it needs an "
                "encoding that writes ASCII as single bytes (utf-8, utf-8-sig, latin-1, "
                f"cp1252...); convert the export, e.g. iconv -f {source.encoding} -t utf-8"
            )


def _check_one_file_per_source(config: Config) -> None:
    """Two systems read from one file would match each other perfectly: a copy-paste slip
    that a run would report as a 100 % match rate, not as a mistake."""
    first: dict[str, str] = {}
    for name in config.sources:
        real = os.path.realpath(config.source_path(name))
        if real in first:
            raise ConfigError(
                f"sources.{name}.path: {config.sources[name].path} is also "
                f"sources.{first[real]}.path; each system exports its own file: give "
                f"{name} a path of its own"
            )
        first[real] = name


def _check_log_file_is_a_file_name(location: str) -> None:
    """``logging.file: ./logs/`` names a folder: Path drops the slash, and a run wrote a
    regular file named ``logs``. So does one that ends in ``.`` or ``..``."""
    separators = "".join(filter(None, (os.sep, os.altsep)))
    last = re.split(f"[{re.escape(separators)}]", location)[-1]
    if last in ("", ".", ".."):
        raise ConfigError(
            f"logging.file: must name a file, not a folder, got {location!r}; add the file's "
            "name, e.g. ./data/logs/keysync.jsonl"
        )


def _check_pad_numbers(config: Config) -> None:
    """0 (off) up to ``processing.max_key_length`` (checked before it: its bound is known)."""
    width = config.normalize.pad_numbers
    if width < 0:
        raise ConfigError(f"normalize.pad_numbers: must be 0 (off) or more, got {width}")
    if width > config.processing.max_key_length:
        raise ConfigError(
            "normalize.pad_numbers: must be at most processing.max_key_length "
            f"({config.processing.max_key_length}), got {width}"
        )


# Settings travel through SQLite and msgpack, which hold 64-bit integers.
_INT_MAX = 2**63 - 1
# The mock clock keeps a table that grows with the square of the days.
MAX_DAYS_OF_HISTORY = 3660
# More normalizer processes than this only add pipes and memory on any machine.
MAX_WORKERS = 64
# A raw key longer than this is rejected anyway; the mock data writes keys this long.
MAX_KEY_LENGTH = 1 << 20


def _check_int_range(data: Any, path: str) -> None:
    """Every integer setting fits in 64 bits (else a run fails on an OverflowError)."""
    if isinstance(data, dict):
        for key, value in data.items():
            _check_int_range(value, f"{path}.{key}" if path else str(key))
    elif isinstance(data, int) and not isinstance(data, bool):
        if data > _INT_MAX:
            raise ConfigError(f"{path}: must be at most {_INT_MAX}, got {data}")
        if data < -_INT_MAX - 1:
            raise ConfigError(f"{path}: must be at least {-_INT_MAX - 1}, got {data}")


def _format_validation_error(exc: msgspec.ValidationError, root: type = Config) -> str:
    """Turn msgspec's "Expected `int`, got `str` - at `$.a.b`" into "a.b: expected int, got str"."""
    text = str(exc)
    message, _, where = text.rpartition(" - at `")
    if not message:
        message, where = text, ""
    path = where.rstrip("`").removeprefix("$").lstrip(".")
    in_key = path.startswith("key` in `")  # a mapping key of the wrong type
    path = path.removeprefix("key` in `").removeprefix("$").lstrip(".")
    message = message.replace("`", "")
    message = message[0].lower() + message[1:]
    # msgspec speaks JSON; a YAML user writes mappings and lists.
    message = re.sub(r"\bobject\b(?! (contains|missing))", "mapping", message)
    message = re.sub(r"\barray\b", "list", message)
    if in_key:
        return f"{path or '(top level)'}: every key must be text, {message}"
    if message.startswith("invalid enum value "):
        choices = _choices(root, path)
        if choices:
            value = message.removeprefix("invalid enum value ")
            return f"{path}: expected one of {', '.join(choices)}, got {value}"
    if message.startswith("object contains unknown field "):
        return _unknown_key(root, path, message.removeprefix("object contains unknown field "))
    if message.startswith("object missing required field "):
        field = message.removeprefix("object missing required field ")
        key = f"{path}.{field}" if path else field
        return f"{key}: required key is missing"
    return f"{path or '(top level)'}: {message}"


def _setting_type(root: type, path: str) -> Any:
    """The type of the setting at ``path`` (``normalize``, ``sources.B.encoding``), or None."""
    kind: Any = root
    for part in path.split(".") if path else []:
        if typing.get_origin(kind) is dict:  # sources.<name>: skip the system name
            kind = typing.get_args(kind)[1]
            continue
        if not (isinstance(kind, type) and issubclass(kind, msgspec.Struct)):
            return None
        by_name = {field.name: field.type for field in msgspec.structs.fields(kind)}
        if part not in by_name:
            return None
        kind = by_name[part]
    return kind


def _choices(root: type, path: str) -> list[str]:
    """The allowed values of the Literal-typed setting at ``path``, for the error message."""
    kind = _setting_type(root, path)
    if typing.get_origin(kind) is Literal:
        return [str(choice) for choice in typing.get_args(kind)]
    return []


def _unknown_key(root: type, path: str, field: str) -> str:
    """``normalize.trimm: unknown key; normalize takes trim, ascii_fold, ...``."""
    key = f"{path}.{field}" if path else field
    kind = _setting_type(root, path)
    if not (isinstance(kind, type) and issubclass(kind, msgspec.Struct)):
        return f"{key}: unknown key"
    names = [f.name for f in msgspec.structs.fields(kind) if f.name != "base_dir"]
    where = path or ("a source" if root is SourceConfig else "the top level")
    return f"{key}: unknown key; {where} takes {', '.join(names)}"


def _check_sources(sources: Any) -> None:
    """Validate each source on its own, so an error names the system (msgspec says ``[...]``)."""
    if not isinstance(sources, dict):
        return
    for name, source in sources.items():
        if not isinstance(name, str):
            if isinstance(name, bool):
                hint = "YAML reads yes/no/on/off/true/false as a boolean: quote the name"
            elif name is None:
                hint = "YAML reads null and ~ as no value: quote the name"
            else:
                hint = f"quote it: '{name}'"
            raise ConfigError(
                f"sources: system name {'null' if name is None else repr(name)} must be text "
                f"({hint})",
                at=f"sources.{name}",
            )
        if not _SYSTEM_NAME.fullmatch(name):
            raise ConfigError(
                f"sources: system name {name!r} may use only letters, digits and _",
                at=f"sources.{name}",
            )
        try:
            msgspec.convert(source, SourceConfig, strict=True)
        except msgspec.ValidationError as exc:
            message = _format_validation_error(exc, SourceConfig)
            separator = ": " if message.startswith("(top level)") else "."
            message = message.removeprefix("(top level): ")
            raise ConfigError(f"sources.{name}{separator}{message}") from None


def _null_sections_as_empty(data: dict[Any, Any], kind: type[msgspec.Struct]) -> dict[Any, Any]:
    """A copy of ``data`` in which a section given as null is an empty mapping.

    A section whose keys are all commented out (``normalize:`` alone) is YAML null.
    It means the section with nothing set, as an empty file is a config with nothing
    set, not "expected mapping, got null". A source (``sources.A:``) is no section:
    its ``path`` is required, and null still says it is missing.
    """
    data = dict(data)
    for field in msgspec.structs.fields(kind):
        if field.name not in data:
            continue
        is_section = isinstance(field.type, type) and issubclass(field.type, msgspec.Struct)
        if data[field.name] is None and (is_section or typing.get_origin(field.type) is dict):
            data[field.name] = {}
        if is_section and isinstance(data[field.name], dict):
            data[field.name] = _null_sections_as_empty(data[field.name], field.type)
    return data


def _column_names_stripped(sources: dict[str, SourceConfig]) -> dict[str, SourceConfig]:
    """``key_column`` and ``timestamp_column`` without surrounding whitespace.

    The reader strips the header's names (``" key "`` is the column ``key``), so a name
    written with spaces in the config could never match: the source was unavailable
    (exit 3), or its timestamps silently empty. Stripped here, they match as the header
    does, and ``config check`` shows the name that is looked for.
    """
    return {
        name: msgspec.structs.replace(
            source,
            key_column=source.key_column.strip(),
            timestamp_column=source.timestamp_column.strip(),
        )
        for name, source in sources.items()
    }


def parse_config(data: Any, base_dir: Path) -> Config:
    """Validate already-loaded YAML data into a ``Config``."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"(top level): expected a mapping of settings, got {type(data).__name__}")
    refuse_yaml11_numbers(data, "")
    data = _null_sections_as_empty(data, Config)
    _check_sources(data.get("sources"))
    try:
        config = msgspec.convert(data, Config, strict=True)
    except msgspec.ValidationError as exc:
        raise ConfigError(_format_validation_error(exc)) from None
    if "base_dir" in data:
        raise ConfigError(_unknown_key(Config, "", "base_dir"))
    config = msgspec.structs.replace(
        config, base_dir=str(base_dir), sources=_column_names_stripped(config.sources)
    )
    _validate(config)
    return config


def load_config(path: str | Path) -> Config:
    """Read, parse and validate the YAML file at ``path`` (safe loader only)."""
    if not str(path).strip():  # Path("") is ".", which would be read as a folder
        raise ConfigError(
            "config file path is empty (-c): give the path of the "
            "YAML file, e.g. -c ./keysync-config.yaml"
        )
    config_path = Path(path)
    try:
        text = config_path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(_not_found(config_path)) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"cannot read config file {config_path}: {exc} (save it as UTF-8 text)"
        ) from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {config_path}: {exc}") from None
    try:
        data = yaml.load(text, Loader=SafeLoaderNoDuplicates)  # a SafeLoader: no python tags
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown position"
        problem = "; ".join(part for part in (exc.context, exc.problem) if part) or "invalid YAML"
        problem = " ".join(problem.split())
        hint = quote_hint(text, mark, problem) if mark else ""
        raise ConfigError(f"{config_path}: invalid YAML at {where}: {problem}{hint}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{config_path}: invalid YAML: {' '.join(str(exc).split())}") from None
    try:
        config = parse_config(data, config_path.resolve().parent)
        if config.normalize.collapse_delims is None:
            check_null_is_written(text, "normalize.collapse_delims")
        return config
    except ConfigError as exc:
        line = line_of(text, exc.at or str(exc).partition(": ")[0])
        where = f"{config_path}:{line}" if line else str(config_path)
        # One line whatever the YAML held: a key with a line break is shown escaped.
        one_line = (str(exc) + type_hint(text, str(exc))).replace("\r", "\\r")
        raise ConfigError(f"{where}: {one_line.replace(chr(10), chr(92) + 'n')}") from None


def _not_found(config_path: Path) -> str:
    """Where the config file was looked for, as an absolute path (``keysync-config.yaml``
    alone does not say which folder a cron job or a container ran in), and what to do."""
    absolute = Path(os.path.abspath(config_path))
    if not absolute.parent.is_dir():
        return (
            f"config file not found: {bytes_shown(str(absolute))} (the folder "
            f"{bytes_shown(str(absolute.parent))} does not exist); name the config file "
            "with -c PATH or KEYSYNC_CONFIG"
        )
    return (
        f"config file not found: {bytes_shown(str(absolute))}; create it (an empty file "
        "takes every default, which `keysync config check` then prints), or name another "
        "with -c PATH or KEYSYNC_CONFIG"
    )


def where_set(config_path: str | Path, setting: str) -> str:
    """``keysync-config.yaml:12``, the line that writes ``setting``, for an error about it
    found after loading (a path that names a file where a folder must be); the path alone
    when the file does not write it (a default) or cannot be read again."""
    try:
        text = Path(config_path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return str(config_path)
    line = line_of(text, setting)
    return f"{config_path}:{line}" if line else str(config_path)
