"""Inbound protection from --web.config.file: the listener's TLS, basic auth and headers, re-read on change.

As exporter-toolkit does, the file (and the files it names) are looked at again for every request and TLS
handshake; a change of content is parsed and checked, and a broken new file never replaces the good one
(the last good protection stays, the problem is logged and
`metrics_relay_web_config_last_reload_successful` turns 0). Certificates, keys, client CAs, users and
headers follow the file; what a handshake already under way cannot change (client_auth_type, versions,
ciphers, curve) and switching TLS on or off need a restart.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import functools
import hashlib
import hmac
import logging
import os
import ssl
import tempfile
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from pathlib import Path

import bcrypt
from aiohttp import web

from relay.errors import ConfigError, Problem
from relay.webconfig import ServerTLS, WebConfig, parse_web_config

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

VERIFIED_CACHE_SIZE = 256
RETRY_SECONDS = 2.0
_REALM_HEADER = 'Basic realm="metrics-relay", charset="UTF-8"'


def read_file(path: Path) -> bytes:
    """A file the web configuration names."""
    return path.read_bytes()


def load_web_config(path: Path) -> WebConfig:
    """Read and check the web configuration file, and build its TLS context once to prove it loads."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(
            str(path), [Problem("", f"cannot read the web configuration file: {exc}")]
        ) from None
    config = parse_web_config(text, source=str(path), base_dir=path.parent, read_file=read_file)
    if config.tls is not None:
        try:
            server_context(config.tls)
        except (ssl.SSLError, OSError, ValueError) as exc:
            raise ConfigError(str(path), [Problem("tls_server_config", f"cannot be loaded: {exc}")]) from None
    return config


def server_context(tls: ServerTLS) -> ssl.SSLContext:
    """The listener's SSLContext for `tls`."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = tls.min_version
    context.maximum_version = tls.max_version
    if tls.ciphers:
        context.set_ciphers(":".join(tls.ciphers))
    if tls.prefer_server_ciphers:
        context.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    if tls.curve is not None:
        context.set_ecdh_curve(tls.curve)
    _load_pair(context, tls.cert_pem, tls.key_pem)
    if tls.client_ca_pem is not None:
        context.load_verify_locations(cadata=tls.client_ca_pem.decode("ascii", errors="replace"))
    context.verify_mode = tls.client_auth
    return context


def _load_pair(context: ssl.SSLContext, cert_pem: bytes, key_pem: bytes) -> None:
    """load_cert_chain reads files only: hand it a private temporary copy (inline PEM included)."""
    with tempfile.TemporaryDirectory(prefix="metrics-relay-tls-") as folder:
        cert_path, key_path = Path(folder) / "tls.crt", Path(folder) / "tls.key"
        for target, content in ((cert_path, cert_pem), (key_path, key_pem)):
            descriptor = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "wb") as file:
                file.write(content)
        context.load_cert_chain(cert_path, key_path, password=_refuse_password)


def _refuse_password() -> str:
    raise ssl.SSLError("the key is encrypted; the relay never prompts for a passphrase")


class InboundProtection:
    """The protection in force: re-read from the file when it or a file it names changed."""

    def __init__(self, path: Path, on_reload: Callable[[bool], None]) -> None:
        self.path = path
        self._on_reload = on_reload
        self.config = load_web_config(path)
        self._stamp = self._stamp_of(self.config)
        self._failed: tuple[tuple[object, ...], float, str] | None = None  # stamp, when, what was wrong
        self._context = server_context(self.config.tls) if self.config.tls is not None else None
        self._verified: OrderedDict[bytes, None] = OrderedDict()  # credentials that passed bcrypt
        self._bcrypt_turn = asyncio.Semaphore(1)  # one check at a time: strangers cannot tie up threads
        on_reload(True)

    # --- keeping up with the file -------------------------------------------------------------------

    def refresh(self) -> WebConfig:
        """The protection to apply now: the file's, if it changed and is good; else the last good one."""
        stamp = self._stamp_of(self.config)
        if stamp == self._stamp:
            return self.config
        now = time.monotonic()
        # A refused file is tried again after a while even if nothing it was stamped by changed: the file
        # it newly names may appear later (web.yml and its certificate often come from separate Secrets).
        if self._failed is not None and self._failed[0] == stamp and now - self._failed[1] < RETRY_SECONDS:
            return self.config
        try:
            config = load_web_config(self.path)
            self._check_restart_free(config)
        except ConfigError as exc:
            if self._failed is None or self._failed[2] != str(exc):
                log.error(
                    "web configuration changed but is unusable; keeping the last good one",
                    extra={"error": str(exc)},
                )
            self._failed = (stamp, now, str(exc))
            self._on_reload(False)
            return self.config
        self.config = config
        self._stamp = self._stamp_of(config)
        self._failed = None
        self._context = server_context(config.tls) if config.tls is not None else None
        self._verified.clear()
        self._on_reload(True)
        log.info("web configuration reloaded", extra={"file": str(self.path)})
        return config

    def _check_restart_free(self, new: WebConfig) -> None:
        """Refuse what must not change under a running listener: switching TLS or basic auth off or on
        (a truncated file must not open the relay to everyone), and the handshake policy."""
        old = self.config
        if bool(old.users) != bool(new.users):
            raise ConfigError(
                str(self.path), [Problem("basic_auth_users", "turning basic auth on or off needs a restart")]
            )
        if (old.tls is None) != (new.tls is None):
            raise ConfigError(
                str(self.path), [Problem("tls_server_config", "turning TLS on or off needs a restart")]
            )
        if (
            old.tls is not None
            and new.tls is not None
            and old.tls.handshake_policy() != new.tls.handshake_policy()
        ):
            raise ConfigError(
                str(self.path),
                [
                    Problem(
                        "tls_server_config",
                        "client_auth_type, versions, cipher suites and curves change with a restart only",
                    )
                ],
            )

    def _stamp_of(self, config: WebConfig) -> tuple[object, ...]:
        """What changes when the file or one it names is rewritten or replaced (Secrets swap a link)."""
        stamps: list[object] = []
        for path in (self.path, *config.files):
            try:
                status = path.stat()
            except OSError as exc:
                stamps.append(("missing", str(path), exc.errno))
            else:
                stamps.append((status.st_ino, status.st_mtime_ns, status.st_size))
        return tuple(stamps)

    # --- TLS --------------------------------------------------------------------------------------

    def listener_context(self) -> ssl.SSLContext | None:
        """The context the listener starts with; each handshake switches to the current one."""
        if self.config.tls is None:
            return None
        base = server_context(self.config.tls)
        base.sni_callback = self._choose_context
        return base

    def _choose_context(
        self, connection: ssl.SSLObject, _server_name: str | None, _base: ssl.SSLContext
    ) -> None:
        self.refresh()
        if self._context is not None:
            connection.context = self._context

    # --- HTTP -------------------------------------------------------------------------------------

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Every endpoint: client certificate names, then basic auth, then the handler."""
        config = self.refresh()
        if (
            config.tls is not None
            and config.tls.client_allowed_sans
            and not _san_allowed(request, config.tls)
        ):
            return web.Response(status=403, text="client certificate not allowed\n")
        if config.users and not await self._authorized(request.headers.get("Authorization", ""), config):
            return web.Response(
                status=401, text="unauthorized\n", headers={"WWW-Authenticate": _REALM_HEADER}
            )
        return await handler(request)

    async def add_headers(self, _request: web.Request, response: web.StreamResponse) -> None:
        """The configured response headers, on every response (signal handler of on_response_prepare)."""
        for name, value in self.config.headers:
            response.headers[name] = value

    async def _authorized(self, header: str, config: WebConfig) -> bool:
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, separator, password = (
                base64.b64decode(encoded.strip(), validate=True).decode().partition(":")
            )
        except (binascii.Error, UnicodeDecodeError):
            return False
        if not separator:
            return False
        hashed = _lookup(config.users, user)
        key = hashlib.sha256(b"\0".join((user.encode(), password.encode(), hashed or b""))).digest()
        if key in self._verified:
            self._verified.move_to_end(key)
            return True
        # bcrypt is slow on purpose: off the event loop, so other scrapes go on meanwhile, and one at a time.
        # Only successes are remembered, so wrong guesses cannot push the scrapers' entries out.
        async with self._bcrypt_turn:
            matches = await asyncio.to_thread(bcrypt.checkpw, password.encode(), hashed or _decoy_hash())
        if not (matches and hashed is not None):
            return False
        self._verified[key] = None
        if len(self._verified) > VERIFIED_CACHE_SIZE:
            self._verified.popitem(last=False)
        return True


@functools.cache
def _decoy_hash() -> bytes:
    """Checked for unknown users, so that a wrong name costs as long as a wrong password."""
    return bcrypt.hashpw(b"metrics-relay decoy", bcrypt.gensalt(rounds=10))


def _lookup(users: tuple[tuple[str, bytes], ...], user: str) -> bytes | None:
    """The user's hash, comparing every name in constant time (no early exit that times the match)."""
    found = None
    for name, hashed in users:
        if hmac.compare_digest(name.encode(), user.encode()):
            found = hashed
    return found


def _san_allowed(request: web.Request, tls: ServerTLS) -> bool:
    transport = request.transport
    certificate = transport.get_extra_info("peercert") if transport is not None else None
    if not certificate:
        return False
    names = {value for _kind, value in certificate.get("subjectAltName", ())}
    return any(allowed in names for allowed in tls.client_allowed_sans)
