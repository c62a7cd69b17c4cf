"""DatabaseConfig: where the store lives and how to connect, with passwords redacted."""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from playhouse.db_url import parseresult_to_dict

from .errors import ConfigurationError
from .errors import quote as quote_value

__all__ = ["DEFAULT_SQLITE_URL", "DatabaseConfig", "redact_url"]

DEFAULT_SQLITE_URL = "sqlite:///data/cardlink.db"

# Every spelling users bring, mapped to the backend that serves it.
_SCHEMES = {"sqlite": "sqlite", "mysql": "mysql", "mysql+pymysql": "mysql", "mariadb": "mysql",
            "mariadb+pymysql": "mysql", "postgresql": "postgresql", "postgres": "postgresql",
            "postgresql+psycopg2": "postgresql", "postgres+psycopg2": "postgresql"}
_BACKEND_NAMES = {"sqlite": "SQLite", "mysql": "MySQL", "postgresql": "PostgreSQL"}
_ACCEPTED = "sqlite:///path.db, mysql://, mysql+pymysql://, mariadb://, postgresql://, postgres://"
_ENCODE = "percent-encode special characters in a password (# as %23, / as %2F, ? as %3F, @ as %40)"
_PARTS = {"user": "user name", "password": "password", "host": "host name",
          "database": "database name"}
_PASSWORD_OPTION = re.compile(r"((?:password|passwd)=)[^&]*", re.IGNORECASE)


def redact_url(url: str) -> str:
    """Return ``url`` with any password replaced by ``***``: everything after the user name
    up to the last ``@``, and any ``password=`` option. Needs no successful parse, so a
    password with a ``#``, ``/`` or ``?`` that breaks the URL is hidden too."""
    scheme, sep, rest = url.partition("://")
    auth, at, host = rest.rpartition("@")
    if sep and at and ":" in auth:
        rest = f"{auth.partition(':')[0]}:***@{host}"
    return _PASSWORD_OPTION.sub(r"\1***", scheme + sep + rest)


class DatabaseConfig:
    """Connection settings, resolved from an argument, the environment, or the SQLite default;
    ``database_url`` (the guide) and ``url`` (the design) are the same value."""

    def __init__(self, database_url: str | None = None, *, url: str | None = None,
                 pool_size: int = 5, max_overflow: int = 10, pool_timeout: float = 30,
                 echo: bool = False, slow_query_ms: float | None = None,
                 busy_timeout: float = 30, readonly: bool = False,
                 connect_defaults: dict | None = None):
        chosen = database_url or url or os.environ.get("DATABASE_URL") or _url_from_components()
        self.database_url = chosen or DEFAULT_SQLITE_URL
        self.pool_size = int(pool_size)
        self.max_overflow = int(max_overflow)
        self.pool_timeout = pool_timeout
        self.echo = bool(echo)
        self.slow_query_ms = slow_query_ms
        self.busy_timeout = busy_timeout
        self.sqlite_uri_options: dict = {}  # SQLite URI parameters from ?mode=ro and the like
        # Only read: SQLite opens the file with mode=ro (never creates or converts it);
        # units of work refuse repository writes on every backend.
        self.readonly = bool(readonly)
        # Driver options (timeouts) a server connection takes where the URL sets none.
        self._connect_defaults = dict(connect_defaults or {})
        if self.pool_size < 1 or self.max_overflow < 0:
            raise ConfigurationError(
                "pool_size must be at least 1 and max_overflow at least 0; "
                f"got pool_size={pool_size}, max_overflow={max_overflow}"
            )
        self._parse()

    @classmethod
    def from_sqlite_path(cls, path: str | os.PathLike, **kwargs) -> DatabaseConfig:
        """Config for a SQLite file at ``path`` (relative paths stay relative)."""
        return cls(f"sqlite:///{quote(os.fspath(path))}", **kwargs)

    @property
    def url(self) -> str:
        return self.database_url

    @property
    def backend(self) -> str:
        """sqlite, mysql or postgresql (read-only: the connect arguments follow from it)."""
        return self._backend

    @property
    def backend_name(self) -> str:
        return _BACKEND_NAMES[self.backend]

    @property
    def is_sqlite(self) -> bool:
        return self.backend == "sqlite"

    @property
    def is_mysql(self) -> bool:
        return self.backend == "mysql"

    @property
    def is_postgresql(self) -> bool:
        return self.backend == "postgresql"

    @property
    def safe_url(self) -> str:
        """The URL with its password replaced by ``***``."""
        return redact_url(self.database_url)

    @property
    def database_name(self) -> str:
        return self._connect["database"]

    @property
    def sqlite_path(self) -> Path | None:
        """The SQLite file, or None for an in-memory or server database."""
        if not self.is_sqlite or self.database_name == ":memory:":
            return None
        return Path(self.database_name)

    def connect_kwargs(self) -> dict:
        """Keyword arguments for the Peewee database class (password included)."""
        return dict(self._connect)

    def __repr__(self) -> str:
        return f"DatabaseConfig({self.safe_url!r})"

    def _parse(self) -> None:
        try:
            parts = urlsplit(self.database_url)
            scheme = parts.scheme.lower()
            parts.port  # noqa: B018 - raises ValueError on a bad port
        except ValueError:  # its text may quote part of a password: not shown
            raise ConfigurationError(
                f"cannot parse database URL {self.safe_url!r}: give the port as a number, and "
                f"{_ENCODE}") from None
        if "#" in self.database_url:  # a fragment is never part of a database URL
            raise ConfigurationError(
                f"database URL {self.safe_url!r} has a '#'; write it as %23 in a password or "
                "file name")
        backend = _SCHEMES.get(scheme)
        if backend is None:
            raise ConfigurationError(
                f"unsupported database URL scheme {scheme or '(none)'!r} in {self.safe_url!r}; "
                f"use one of: {_ACCEPTED}"
            )
        self._backend = backend
        if backend == "sqlite":
            path = unquote(parts.path.removeprefix("/"))
            if parts.netloc:
                raise ConfigurationError(
                    f"SQLite URL {self.safe_url!r} has a host part; a relative file takes "
                    "three slashes (sqlite:///data/cardlink.db), an absolute one four "
                    "(sqlite:////var/lib/cardlink.db)"
                )
            if not path:
                raise ConfigurationError(
                    f"SQLite URL {self.safe_url!r} names no file; use sqlite:///data/cardlink.db "
                    "or sqlite:///:memory:"
                )
            if "\x00" in path:
                raise ConfigurationError(
                    "the file name in the database URL has a NUL character (%00); remove it")
            self._connect = {"database": path}
            options = _query_options(parts.query, "sqlite", self.safe_url)
            self.busy_timeout = options.pop("timeout", self.busy_timeout)
            self.sqlite_uri_options = options
            self.readonly = self.readonly or options.get("mode") == "ro"
            return
        if "@" in self.database_url.partition("://")[2].removeprefix(parts.netloc):
            # an unencoded /, ? or # in the password ended the host part early
            raise ConfigurationError(
                f"database URL {self.safe_url!r} has an '@' after its host; {_ENCODE}")
        kwargs = parseresult_to_dict(parts._replace(scheme=backend, query=""),
                                     unquote_password=True, unquote_user=True)
        kwargs.update(self._connect_defaults)
        kwargs.update(_query_options(parts.query, backend, self.safe_url))
        if not kwargs.get("database"):
            raise ConfigurationError(
                f"database URL {self.safe_url!r} names no database; add it after the host, "
                f"e.g. {backend}://user@host/cardlink"
            )
        if "passwd" in kwargs:
            kwargs["password"] = kwargs.pop("passwd")
        for key, value in kwargs.items():
            if isinstance(value, str) and "\x00" in value:  # drivers: "embedded null character"
                part = _PARTS.get(key, f"option {key}")
                raise ConfigurationError(f"the {part} in the database URL has a NUL character "
                                         "(%00); remove it")
        self._connect = kwargs


def _seconds(text: str) -> float:
    value = float(text)
    if not 0 <= value < 1e6:
        raise ValueError(text)
    return value


def _flag(text: str) -> bool:
    value = {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}
    return value[text.lower()]


def _charset(text: str) -> str:
    """A character set PyMySQL knows (it fails on others with an AttributeError)."""
    try:
        from pymysql.charset import charset_by_name  # optional driver: the manager names it
    except ImportError:
        return text
    if charset_by_name(text) is None:
        raise ValueError(text)
    return text


def _file(text: str) -> str:
    """A path the driver opens (checked in ``_query_options``, which names the option)."""
    return text


# What each converter expects, for the error message.
_EXPECTED = {int: "a whole number", _seconds: "a number of seconds", _flag: "true or false",
             str: "text", _charset: "a MySQL character set such as utf8mb4", _file: "a path"}


def _choice(*allowed: str):
    """A converter that accepts only ``allowed``, registered in ``_EXPECTED``."""
    def convert(text: str) -> str:
        if text not in allowed:
            raise ValueError(text)
        return text
    _EXPECTED[convert] = "one of " + ", ".join(allowed)
    return convert


# The query-string options each driver accepts, converted to the type it wants.
_QUERY_OPTIONS = {
    "sqlite": {"timeout": _seconds, "mode": _choice("ro", "rw", "rwc"),
               "cache": _choice("shared", "private"), "immutable": _choice("0", "1")},
    "mysql": {"connect_timeout": int, "read_timeout": int, "write_timeout": int,
              "charset": _charset, "autocommit": _flag, "local_infile": _flag, "ssl_ca": _file,
              "ssl_cert": _file, "ssl_key": _file, "ssl_disabled": _flag, "unix_socket": str,
              "init_command": str},
    "postgresql": {"connect_timeout": int, "sslmode": _choice(
        "disable", "allow", "prefer", "require", "verify-ca", "verify-full"),
        "sslrootcert": str, "sslcert": str, "sslkey": str, "application_name": str,
        "options": str, "keepalives": int, "keepalives_idle": int, "keepalives_interval": int,
        "keepalives_count": int, "tcp_user_timeout": int, "target_session_attrs": str},
}


def _query_options(query: str, backend: str, safe_url: str) -> dict:
    """Query-string options the driver accepts, typed; ConfigurationError for the rest."""
    accepted = _QUERY_OPTIONS[backend]
    options = {}
    for key, text in parse_qsl(query, keep_blank_values=True):
        convert = accepted.get(key)
        if convert is None:
            raise ConfigurationError(
                f"unsupported option {key[:30]!r} in the {_BACKEND_NAMES[backend]} URL "
                f"{safe_url[:80]!r}; accepted: {', '.join(accepted)}")
        try:
            options[key] = convert(text)
        except (KeyError, ValueError):
            raise ConfigurationError(
                f"option {key} in the database URL must be {_EXPECTED[convert]}; got "
                f"{text[:20]!r}") from None
        if convert is _file and not os.path.isfile(text):
            raise ConfigurationError(f"option {key} in the database URL names no file at "
                                     f"{quote_value(text, 200)}; check the path")
    return options


def _url_from_components() -> str | None:
    env = os.environ
    driver = env.get("CARDLINK_DB_DRIVER")
    if not driver:
        return None
    name = env.get("CARDLINK_DB_NAME", "cardlink")
    if driver.lower() == "sqlite":
        return f"sqlite:///{quote(env.get('CARDLINK_DB_NAME', 'data/cardlink.db'))}"
    auth = quote(env.get("CARDLINK_DB_USER", ""), safe="")
    password = env.get("CARDLINK_DB_PASSWORD")
    if password:
        auth += ":" + quote(password, safe="")
    netloc = env.get("CARDLINK_DB_HOST", "localhost")
    if auth:
        netloc = f"{auth}@{netloc}"
    if env.get("CARDLINK_DB_PORT"):
        netloc += f":{env['CARDLINK_DB_PORT']}"
    return f"{driver.lower()}://{netloc}/{name}"
