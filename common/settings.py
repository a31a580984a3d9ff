"""Settings from environment variables: one pydantic-settings class per job.

`load_settings` turns validation failures into a `ConfigError` naming the variable, and refuses
unknown variables with the job's prefix (a typo would otherwise be silently ignored).
`settings_help` renders the `--help` text from the same class, so the two cannot disagree.
"""

import os
import re
import textwrap
from enum import Enum
from typing import TypeVar

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

from common.errors import ConfigError

S = TypeVar("S", bound=BaseSettings)


def env_name(cls: type[BaseSettings], field: str) -> str:
    """The variable that sets `field` (or names it, when `field` is already an alias)."""
    info = cls.model_fields.get(field)
    if info is None and field.upper() in {str(f.validation_alias).upper() for f in cls.model_fields.values()}:
        return field.upper()
    if info is not None and isinstance(info.validation_alias, str):
        return info.validation_alias.upper()  # a variable someone else owns, e.g. boto3's AWS_MAX_ATTEMPTS
    return f"{cls.model_config.get('env_prefix', '')}{field}".upper()


def load_settings(cls: type[S], environ: dict[str, str] | None = None) -> S:
    environ = os.environ if environ is None else environ
    prefix = cls.model_config.get("env_prefix", "").upper()
    known = {env_name(cls, name) for name in cls.model_fields}
    unknown = sorted(k for k in environ if k.upper().startswith(prefix) and k.upper() not in known)
    if unknown:
        raise ConfigError(f"unknown variable(s) {', '.join(unknown)}; see --help for the list")
    try:
        return cls()
    except SettingsError as exc:  # a value the source cannot decode, e.g. EVAL_COLUMNS=image=path (not JSON)
        match = re.search(r'field "([^"]+)"', str(exc))
        var = env_name(cls, match[1]) if match else prefix.rstrip("_")
        value = environ.get(var)
        cause = f": {exc.__cause__}" if exc.__cause__ else ""
        raise ConfigError(f"invalid configuration: {var}: expected JSON{cause}"
                          + (f" (got {value!r})" if value is not None else "")) from None
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            var = env_name(cls, str(err["loc"][0])) if err["loc"] else prefix.rstrip("_")
            value = environ.get(var)
            shown = f" (got {value!r})" if value is not None else ""
            problems.append(f"{var}: {err['msg']}{shown}")
        raise ConfigError("invalid configuration: " + "; ".join(problems)) from None


def settings_help(cls: type[BaseSettings], *, summary: str) -> str:
    lines = [summary.strip(), "", "Configured by environment variables:", ""]
    for name, field in cls.model_fields.items():
        value = field.get_default(call_default_factory=True)
        value = value.value if isinstance(value, Enum) else value  # an enum setting shows what you would type
        default = "(required)" if field.is_required() else repr(value)
        lines.append(f"  {env_name(cls, name)}  [default: {default}]")
        if field.description:
            lines.extend(textwrap.wrap(field.description, 92, initial_indent="      ", subsequent_indent="      "))
    return "\n".join(lines) + "\n"


def public_config(settings: BaseSettings) -> dict:
    """The effective settings for a report. Secrets are `SecretStr` fields, which dump masked."""
    return settings.model_dump(mode="json")


def check_uri(value: str, *, needs_key: bool) -> str:
    """A setting's URI: a local path, or s3://bucket/key (`needs_key`: an object, not a prefix).

    An empty value would otherwise read the working directory ("is a directory") or write to
    "/thresholds.json"; it is refused here, where the error can name the variable.
    """
    if not value.strip():
        raise ValueError("must not be empty: give s3://bucket/key or a path")
    if value.startswith("s3://"):
        bucket, _, key = value[len("s3://"):].partition("/")
        if not bucket:
            raise ValueError("an s3:// URI needs a bucket: s3://bucket/key")
        if needs_key and not key.strip("/"):
            raise ValueError("names a bucket, not an object: s3://bucket/key")
    return value


class StorageSettings(BaseSettings):
    """How every storage call of a run is bounded; shared by both jobs (`common.storage`).

    Worst case of one call against a store that accepts connections and never answers, with the
    defaults: AWS_MAX_ATTEMPTS x S3_READ_TIMEOUT + backoff (< 1 + 2 s) = 3 x 15 + 3 = 48 s.
    """

    model_config = SettingsConfigDict(env_prefix="S3_", case_sensitive=False, extra="ignore")

    connect_timeout: float = Field(
        5.0, gt=0, le=600, description="Seconds to open a TCP connection to the S3 endpoint, per attempt.")
    read_timeout: float = Field(
        15.0, gt=0, le=600,
        description="Seconds the S3 endpoint may stay silent (no byte sent or received) within one attempt; "
        "then the attempt fails and is retried.")
    deadline: float = Field(
        900.0, gt=0, le=7 * 24 * 3600,
        description="Seconds all of the run's storage calls may take together (time inside storage calls only, "
        "retries included): a store that answers too slowly to ever finish (a byte at a time) ends the run with 74 "
        "instead of hanging. Raise it for runs that move many GB, e.g. long trainings writing large checkpoints.")
    max_attempts: int = Field(
        3, ge=1, le=20, validation_alias="AWS_MAX_ATTEMPTS",
        description="Requests per storage call in total (first try included); boto3's own variable.")
