"""``--web.config.file``: the web configuration format of Prometheus' exporter-toolkit.

The same YAML file node_exporter and other exporters take: ``tls_server_config`` (certificate and key,
client CA and client auth type for mutual TLS), ``http_server_config.headers`` and ``basic_auth_users``
(bcrypt hashes). Parsing needs PyYAML and bcrypt hashes need bcrypt: both come with ``percpu[web]`` and
are imported only when a web config is given, so a plain install serves plain HTTP without them.

Differences, each refused with a message rather than ignored: Python's ssl module cannot ask for a client
certificate without verifying it, so ``RequestClientCert`` and ``RequireAnyClientCert`` are refused;
``cipher_suites`` and ``curve_preferences`` take Go's names, which have no one-to-one OpenSSL mapping;
``rate_limit`` is not implemented (``--web.max-requests`` bounds the load instead). The file is read once
at start: certificates and keys are loaded before the exporter gives up its privileges.
"""

from __future__ import annotations

import base64
import hashlib
import os
import ssl
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import PercpuError

__all__ = ["BasicAuth", "WebConfig", "WebConfigError", "load_web_config"]

INSTALL = "pip install 'percpu[web]'"

_CLIENT_AUTH = {
    "NoClientCert": ssl.CERT_NONE,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
_TLS_VERSIONS = {
    "TLS10": ssl.TLSVersion.TLSv1,
    "TLS11": ssl.TLSVersion.TLSv1_1,
    "TLS12": ssl.TLSVersion.TLSv1_2,
    "TLS13": ssl.TLSVersion.TLSv1_3,
}
_HEADERS = (
    "Content-Security-Policy",
    "X-Frame-Options",
    "X-Content-Type-Options",
    "X-XSS-Protection",
    "Strict-Transport-Security",
)
_TLS_KEYS = {
    "cert",
    "key",
    "client_ca",
    "cert_file",
    "key_file",
    "client_auth_type",
    "client_ca_file",
    "client_allowed_sans",
    "min_version",
    "max_version",
    "cipher_suites",
    "prefer_server_cipher_suites",
    "curve_preferences",
}


class WebConfigError(PercpuError):
    """The web configuration file is missing, malformed or asks for something percpu cannot do."""


class BasicAuth:
    """bcrypt-checked users; a successful check is cached (bcrypt is slow on purpose, ~50-100 ms at cost
    10), a failed one is not, and an unknown user costs one bcrypt check like a known one."""

    def __init__(self, users: Mapping[str, str]) -> None:
        try:
            import bcrypt
        except ImportError as exc:
            raise WebConfigError(f"basic_auth_users needs the bcrypt package: {INSTALL}") from exc
        self._bcrypt = bcrypt
        self.users = {u: h.encode() for u, h in users.items()}
        for user, h in self.users.items():
            if not h.startswith((b"$2a$", b"$2b$", b"$2y$")):
                raise WebConfigError(f"basic_auth_users: the password of {user!r} is not a bcrypt hash")
        self._dummy = next(iter(self.users.values()))
        self._ok: dict[bytes, None] = {}
        self._lock = threading.Lock()

    def check(self, header: str | None) -> bool:
        """``header`` is the Authorization header's value, or None."""
        if not header or header[:6].lower() != "basic ":
            return False
        try:
            user, sep, password = base64.b64decode(header[6:].strip(), validate=True).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return False
        if not sep:
            return False
        h = self.users.get(user)
        key = hashlib.sha256(b"\0".join([user.encode(), password.encode(), h or b""])).digest()
        with self._lock:
            if key in self._ok:
                return True
        try:
            good = self._bcrypt.checkpw(password.encode(), h if h is not None else self._dummy)
        except ValueError:
            return False
        if good and h is not None:
            with self._lock:
                if len(self._ok) >= 256:  # bounded: forget the oldest
                    self._ok.pop(next(iter(self._ok)))
                self._ok[key] = None
            return True
        return False


@dataclass
class WebConfig:
    ssl_context: ssl.SSLContext | None = None
    auth: BasicAuth | None = None
    headers: list[tuple[str, str]] = field(default_factory=list)
    allowed_sans: list[str] = field(default_factory=list)

    def san_allowed(self, peercert: Mapping[str, Any] | None) -> bool:
        """``client_allowed_sans``: the client certificate must carry one of them (exact match)."""
        if not self.allowed_sans:
            return True
        if not peercert:
            return False
        names = {str(v) for _, v in peercert.get("subjectAltName", ())}
        return any(s in names for s in self.allowed_sans)


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise WebConfigError(f"{where}: expected a mapping")
    return value


def _string(section: Mapping[str, Any], key: str, where: str) -> str | None:
    v = section.get(key)
    if v is None or v == "":
        return None
    if not isinstance(v, str):
        raise WebConfigError(f"{where}.{key}: expected a string")
    return v


def _pem_file(text: str) -> str:
    """Inline PEM as a path the ssl module can load: an anonymous memory file, never on disk."""
    fd = os.memfd_create("percpu-web-config", os.MFD_CLOEXEC)
    os.write(fd, text.encode())
    return f"/proc/self/fd/{fd}"


def _tls(section: dict[str, Any], path: str) -> tuple[ssl.SSLContext, list[str]]:
    where = "tls_server_config"
    unknown = set(section) - _TLS_KEYS
    if unknown:
        raise WebConfigError(f"{path}: {where}: unknown field(s) {', '.join(sorted(unknown))}")
    for name in ("cipher_suites", "curve_preferences"):
        if section.get(name):
            raise WebConfigError(
                f"{path}: {where}.{name} takes Go's names, which percpu cannot map to OpenSSL's: remove it "
                "(the defaults of Python's ssl module apply)"
            )
    cert, key = _string(section, "cert", where), _string(section, "key", where)
    cert_file, key_file = _string(section, "cert_file", where), _string(section, "key_file", where)
    if (cert and cert_file) or (key and key_file):
        raise WebConfigError(f"{path}: {where}: give cert or cert_file, key or key_file, not both")
    fds: list[str] = []
    if cert:
        cert_file = _pem_file(cert)
        fds.append(cert_file)
    if key:
        key_file = _pem_file(key)
        fds.append(key_file)
    if not cert_file or not key_file:
        raise WebConfigError(f"{path}: {where} needs cert_file (or cert) and key_file (or key)")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        versions: dict[str, str | None] = {
            k: _string(section, k, where) for k in ("min_version", "max_version")
        }
        for k, v in versions.items():
            if v is not None and v not in _TLS_VERSIONS:
                raise WebConfigError(f"{path}: {where}.{k}: {v!r}: choose {', '.join(_TLS_VERSIONS)}")
        ctx.minimum_version = _TLS_VERSIONS[versions["min_version"] or "TLS12"]
        ctx.maximum_version = _TLS_VERSIONS[versions["max_version"] or "TLS13"]
        try:
            ctx.load_cert_chain(cert_file, key_file)
        except (OSError, ssl.SSLError) as exc:
            raise WebConfigError(f"{path}: {where}: cannot load the certificate and key: {exc}") from exc
        auth_type = _string(section, "client_auth_type", where) or "NoClientCert"
        if auth_type in ("RequestClientCert", "RequireAnyClientCert"):
            raise WebConfigError(
                f"{path}: {where}.client_auth_type {auth_type} accepts unverified client certificates, "
                "which percpu does not: use RequireAndVerifyClientCert (or VerifyClientCertIfGiven)"
            )
        if auth_type not in _CLIENT_AUTH:
            raise WebConfigError(
                f"{path}: {where}.client_auth_type {auth_type!r}: choose {', '.join(_CLIENT_AUTH)}"
            )
        ca, ca_file = _string(section, "client_ca", where), _string(section, "client_ca_file", where)
        if ca and ca_file:
            raise WebConfigError(f"{path}: {where}: give client_ca or client_ca_file, not both")
        if _CLIENT_AUTH[auth_type] != ssl.CERT_NONE:
            if not ca and not ca_file:
                raise WebConfigError(f"{path}: {where}.client_auth_type {auth_type} needs client_ca_file")
            try:
                ctx.load_verify_locations(cafile=ca_file, cadata=ca)
            except (OSError, ssl.SSLError) as exc:
                raise WebConfigError(f"{path}: {where}: cannot load the client CA: {exc}") from exc
            ctx.verify_mode = _CLIENT_AUTH[auth_type]
        if section.get("prefer_server_cipher_suites", True):
            ctx.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    finally:
        for f in fds:
            os.close(int(f.rsplit("/", 1)[1]))
    sans = section.get("client_allowed_sans") or []
    if not isinstance(sans, list) or not all(isinstance(s, str) for s in sans):
        raise WebConfigError(f"{path}: {where}.client_allowed_sans: expected a list of strings")
    if sans and ctx.verify_mode != ssl.CERT_REQUIRED:
        raise WebConfigError(f"{path}: {where}.client_allowed_sans needs RequireAndVerifyClientCert")
    return ctx, sans


def load_web_config(path: str) -> WebConfig:
    """Read and check the file; every problem is a :class:`WebConfigError` naming the field."""
    try:
        import yaml
    except ImportError as exc:
        raise WebConfigError(f"--web.config.file needs the PyYAML package: {INSTALL}") from exc
    try:
        with open(path, encoding="utf-8") as f:
            doc = yaml.safe_load(f)
    except OSError as exc:
        raise WebConfigError(f"--web.config.file {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise WebConfigError(f"--web.config.file {path}: not valid YAML: {exc}") from exc
    top = _mapping(doc, path)
    unknown = set(top) - {"tls_server_config", "http_server_config", "basic_auth_users", "rate_limit"}
    if unknown:
        raise WebConfigError(f"{path}: unknown field(s) {', '.join(sorted(unknown))}")
    if top.get("rate_limit"):
        raise WebConfigError(f"{path}: rate_limit is not implemented by percpu: use --web.max-requests")
    cfg = WebConfig()
    tls = _mapping(top.get("tls_server_config"), "tls_server_config")
    if tls:
        cfg.ssl_context, cfg.allowed_sans = _tls(tls, path)
    http = _mapping(top.get("http_server_config"), "http_server_config")
    if set(http) - {"http2", "headers"}:
        raise WebConfigError(
            f"{path}: http_server_config: unknown field(s) {', '.join(set(http) - {'http2'})}"
        )
    for name, value in _mapping(http.get("headers"), "http_server_config.headers").items():
        if name not in _HEADERS:
            raise WebConfigError(
                f"{path}: http_server_config.headers: {name} cannot be set: {', '.join(_HEADERS)}"
            )
        if not isinstance(value, str) or "\n" in value or "\r" in value:
            raise WebConfigError(f"{path}: http_server_config.headers.{name}: expected a one-line string")
        if value:
            cfg.headers.append((name, value))
    users = _mapping(top.get("basic_auth_users"), "basic_auth_users")
    if users:
        if not all(isinstance(v, str) for v in users.values()):
            raise WebConfigError(f"{path}: basic_auth_users: each user maps to a bcrypt hash string")
        cfg.auth = BasicAuth(users)
    return cfg
