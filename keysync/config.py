"""The configuration schema (SPEC.md "Configuration") as msgspec Structs.

Every key is optional and defaults to SPEC.md. Unknown keys and wrong types are
errors that name the YAML path, because a typo that silently falls back to a
default is the worst kind of configuration bug.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any, Literal

import msgspec
import yaml

from keysync.cron import CronError, CronSchedule
from keysync.errors import ConfigError

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


class SourceConfig(_Section):
    path: str
    type: Literal["csv"] = "csv"
    key_column: str = "key"
    delimiter: str = ","
    encoding: str = "utf-8"
    timestamp_column: str = "last_seen_at"


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
    source_timeout_s: float = 30
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

    def to_yaml(self) -> str:
        """The effective configuration, every default filled in, as YAML."""
        data = msgspec.to_builtins(self)
        data.pop("base_dir", None)
        return str(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))

    def normalization_fingerprint(self) -> str:
        """A hash of the rules: a change means earlier normalized keys are stale."""
        rules = msgspec.json.encode(self.normalize) + str(self.processing.max_key_length).encode()
        return hashlib.sha256(rules).hexdigest()[:16]


_SYSTEM_NAME = re.compile(r"^[A-Za-z0-9_]+$")


def _validate(config: Config) -> None:
    """Rules that types alone cannot express; each message names its YAML path."""
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
        if value <= 0:
            raise ConfigError(f"{path}: must be greater than 0, got {value}")
    if config.normalize.pad_numbers < 0:
        raise ConfigError(
            f"normalize.pad_numbers: must be 0 (off) or more, got {config.normalize.pad_numbers}"
        )
    collapse = config.normalize.collapse_delims
    if collapse is not None and len(collapse) != 1:
        raise ConfigError(
            f"normalize.collapse_delims: must be one character or null, got {collapse!r}"
        )
    rate = config.simulation.failures.inject_corruption
    if not 0 <= rate <= 1:
        raise ConfigError(f"simulation.failures.inject_corruption: must be within 0-1, got {rate}")
    if not config.sources:
        raise ConfigError("sources: at least the authority source A is required")
    if len(config.sources) < 2:
        raise ConfigError("sources: the authority needs at least one peer to compare with")
    for name, source in config.sources.items():
        if not _SYSTEM_NAME.match(name):
            raise ConfigError(f"sources.{name}: system names may use only letters, digits and _")
        if not source.path.strip():
            raise ConfigError(f"sources.{name}.path: must not be empty")
        if len(source.delimiter) != 1:
            raise ConfigError(
                f"sources.{name}.delimiter: must be one character, got {source.delimiter!r}"
            )
        try:
            "".encode(source.encoding)
        except LookupError:
            raise ConfigError(
                f"sources.{name}.encoding: unknown encoding {source.encoding!r}"
            ) from None


def _format_validation_error(exc: msgspec.ValidationError) -> str:
    """Turn msgspec's "Expected `int`, got `str` - at `$.a.b`" into "a.b: expected int, got str"."""
    text = str(exc)
    message, _, where = text.rpartition(" - at `")
    if not message:
        message, where = text, ""
    path = where.rstrip("`").removeprefix("$").lstrip(".")
    message = message.replace("`", "")
    message = message[0].lower() + message[1:]
    if message.startswith("object contains unknown field "):
        field = message.removeprefix("object contains unknown field ")
        key = f"{path}.{field}" if path else field
        return f"{key}: unknown key (check the spelling against `keysync config check`)"
    if message.startswith("object missing required field "):
        field = message.removeprefix("object missing required field ")
        key = f"{path}.{field}" if path else field
        return f"{key}: required key is missing"
    return f"{path or '(top level)'}: {message}"


def _check_sources(sources: Any) -> None:
    """Validate each source on its own, so an error names the system (msgspec says ``[...]``)."""
    if not isinstance(sources, dict):
        return
    for name, source in sources.items():
        try:
            msgspec.convert(source, SourceConfig, strict=True)
        except msgspec.ValidationError as exc:
            message = _format_validation_error(exc)
            separator = ": " if message.startswith("(top level)") else "."
            message = message.removeprefix("(top level): ")
            raise ConfigError(f"sources.{name}{separator}{message}") from None


def parse_config(data: Any, base_dir: Path) -> Config:
    """Validate already-loaded YAML data into a ``Config``."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"(top level): expected a mapping of settings, got {type(data).__name__}")
    _check_sources(data.get("sources"))
    try:
        config = msgspec.convert(data, Config, strict=True)
    except msgspec.ValidationError as exc:
        raise ConfigError(_format_validation_error(exc)) from None
    if "base_dir" in data:
        raise ConfigError(
            "base_dir: unknown key (check the spelling against `keysync config check`)"
        )
    config = msgspec.structs.replace(config, base_dir=str(base_dir))
    _validate(config)
    return config


def load_config(path: str | Path) -> Config:
    """Read, parse and validate the YAML file at ``path`` (safe loader only)."""
    config_path = Path(path)
    try:
        text = config_path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"config file not found: {config_path} (pass -c PATH or set KEYSYNC_CONFIG)"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {config_path}: {exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown position"
        problem = exc.problem or exc.context or "invalid YAML"
        raise ConfigError(f"{config_path}: invalid YAML at {where}: {problem}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{config_path}: invalid YAML: {exc}") from None
    try:
        return parse_config(data, config_path.resolve().parent)
    except ConfigError as exc:
        raise ConfigError(f"{config_path}: {exc}") from None
