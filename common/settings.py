"""Settings from environment variables: one pydantic-settings class per job.

`load_settings` turns validation failures into a `ConfigError` naming the variable, and refuses
unknown variables with the job's prefix (a typo would otherwise be silently ignored).
`settings_help` renders the `--help` text from the same class, so the two cannot disagree.
"""

import os
import textwrap
from typing import TypeVar

from pydantic import ValidationError
from pydantic_settings import BaseSettings

from common.errors import ConfigError

S = TypeVar("S", bound=BaseSettings)


def env_name(cls: type[BaseSettings], field: str) -> str:
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
        default = "(required)" if field.is_required() else repr(field.get_default(call_default_factory=True))
        lines.append(f"  {env_name(cls, name)}  [default: {default}]")
        if field.description:
            lines.extend(textwrap.wrap(field.description, 92, initial_indent="      ", subsequent_indent="      "))
    return "\n".join(lines) + "\n"


def public_config(settings: BaseSettings) -> dict:
    """The effective settings for a report. Secrets are `SecretStr` fields, which dump masked."""
    return settings.model_dump(mode="json")
