"""Secrets for the daemon: systemd credentials, files, the environment, literal values.

Secrets never live in the database nor in unit files. Under systemd the preferred source is
``LoadCredential=NAME:/etc/capsched/credentials/NAME``: systemd copies the file to a private,
read-only directory (``$CREDENTIALS_DIRECTORY``) only the service can read, so the secret's
file on disk may stay readable by root alone.

:func:`resolve_secret` picks, in order, the systemd credential, the configured file, the
environment variable, the literal config value. The first source that is *present* wins; a
source that is present but unusable (an unreadable or empty file) is an error rather than a
silent fall-through to a weaker source, because a typo must not swap the secret in use.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

CREDENTIALS_DIRECTORY_ENV = "CREDENTIALS_DIRECTORY"


class SecretError(ValueError):
    """A configured secret source exists but cannot be used; the message names it."""


def _read_secret_file(path: Path, label: str) -> str:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SecretError(f"{label}: cannot read {str(path)!r}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise SecretError(f"{label}: {str(path)!r} is not valid UTF-8") from None
    # Editors and `echo` end files with a newline; it is never part of a secret.
    secret = text.strip()
    if not secret:
        raise SecretError(f"{label}: {str(path)!r} is empty")
    return secret


def read_credential(name: str, env: Mapping[str, str] | None = None) -> str | None:
    """The systemd credential ``name`` (``LoadCredential=``), or None when there is none.

    None when ``$CREDENTIALS_DIRECTORY`` is unset (not run by systemd, or no credentials)
    or holds no file ``name``; an empty or unreadable credential raises :class:`SecretError`.
    """
    env = os.environ if env is None else env
    directory = env.get(CREDENTIALS_DIRECTORY_ENV)
    if not directory:
        return None
    if not name or "/" in name or name in (".", ".."):
        raise SecretError(f"invalid credential name {name!r}")
    path = Path(directory) / name
    if not path.exists():
        return None
    return _read_secret_file(path, f"systemd credential {name!r}")


def resolve_secret(
    value: str,
    file: str,
    credential_name: str,
    env_name: str,
    env: Mapping[str, str] | None = None,
) -> str | None:
    """The secret from the first present source, or None when no source is configured.

    Order: systemd credential ``credential_name``, the file ``file``, the environment
    variable ``env_name``, the literal ``value``. Empty strings mean "not configured".
    Surrounding whitespace is stripped from every source.
    """
    env = os.environ if env is None else env
    if credential_name:
        credential = read_credential(credential_name, env)
        if credential is not None:
            return credential
    if file:
        return _read_secret_file(Path(file), "secret file")
    if env_name and env.get(env_name, "").strip():
        return env[env_name].strip()
    if value.strip():
        return value.strip()
    return None
