"""nginx from .peers as a real peer: an mTLS upstream serving a file, and a plain-HTTP→mTLS proxy of it."""

from __future__ import annotations

import os
import pwd
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from bench.pki import PkiFiles
from bench.processes import free_port, running_process, write_file

PEERS_NGINX = Path(__file__).resolve().parents[1] / ".peers" / "bin" / "nginx"
EXPOSITION_CONTENT_TYPE = "text/plain; version=0.0.4"


def nginx_binary() -> Path | None:
    """nginx on PATH (`make bench` puts .peers/bin first), else the one scripts/fetch-peers unpacked."""
    found = shutil.which("nginx")
    if found is not None:
        return Path(found)
    return PEERS_NGINX if PEERS_NGINX.exists() else None


@dataclass(frozen=True)
class NginxServer:
    """One `server {}` block and the port it listens on."""

    port: int
    block: str


def mtls_file_server(pki: PkiFiles, body_file: Path) -> NginxServer:
    """Serves `body_file` at /metrics over TLS, only to clients with a certificate from the client CA."""
    port = free_port()
    return NginxServer(port, _mtls_server_block(pki, port, str(body_file)))


def _mtls_server_block(pki: PkiFiles, port: int, served: str) -> str:
    """A `server {}` that serves the file at `served` (an nginx path expression) at /metrics over mTLS."""
    return f"""
    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {pki.server_cert};
        ssl_certificate_key {pki.server_key};
        ssl_client_certificate {pki.client_ca};
        ssl_verify_client on;
        location = /metrics {{
            alias {served};
            types {{ }}
            default_type "{EXPOSITION_CONTENT_TYPE}";
        }}
    }}"""


def mtls_variant_server(pki: PkiFiles, variant_files: list[Path]) -> NginxServer:
    """As mtls_file_server, but each request gets the next of `variant_files` (files `<stem>-<k>.<ext>` in one
    folder): the file is chosen by the last digit of $connection_requests, so every client that keeps its
    connection alive (the proxies and relays here do) gets a different file than on its request before."""
    port = free_port()
    count = len(variant_files)
    folder, stem, suffix = variant_files[0].parent, variant_files[0].stem[:-2], variant_files[0].suffix
    expected = [folder / f"{stem}-{k}{suffix}" for k in range(count)]
    if variant_files != expected or count not in (2, 4, 5):
        raise ValueError(f"variant files must be {stem}-0{suffix} … in one folder, 2, 4 or 5 of them")
    # digit d → variant d mod count: consecutive digits (9 then 0 included) never give the same variant,
    # as 9 mod count is not 0 for these counts
    digits = "\n".join(f'        "~{d}$" {d % count};' for d in range(10))
    variant_map = f"""
    map $connection_requests $variant_{port} {{
{digits}
    }}"""
    served = f"{folder}/{stem}-$variant_{port}{suffix}"
    return NginxServer(port, variant_map + _mtls_server_block(pki, port, served))


def passthrough_proxy(pki: PkiFiles, upstream_port: int, *, buffering: bool) -> NginxServer:
    """Plain HTTP on /metrics, proxied to the mTLS upstream with the client certificate (kept-alive)."""
    port = free_port()
    block = f"""
    upstream mtls_{port} {{
        server 127.0.0.1:{upstream_port};
        keepalive 4;
    }}
    server {{
        listen 127.0.0.1:{port};
        location = /metrics {{
            proxy_pass https://mtls_{port}/metrics;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering {"on" if buffering else "off"};
            proxy_ssl_certificate {pki.client_cert};
            proxy_ssl_certificate_key {pki.client_key};
            proxy_ssl_trusted_certificate {pki.server_ca};
            proxy_ssl_verify on;
            proxy_ssl_name localhost;
            proxy_ssl_server_name on;
        }}
    }}"""
    return NginxServer(port, block)


def _config(directory: Path, servers: list[NginxServer]) -> str:
    # As root, workers would switch to `nobody`, who cannot read a private temporary folder.
    user = f"user {pwd.getpwuid(os.geteuid()).pw_name};" if os.geteuid() == 0 else ""
    temp = directory / "temp"
    blocks = "\n".join(server.block for server in servers)
    return f"""
daemon off;
master_process on;
worker_processes 1;
{user}
pid {directory / "nginx.pid"};
error_log {directory / "error.log"} warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    sendfile on;
    client_body_temp_path {temp / "body"};
    proxy_temp_path {temp / "proxy"};
    fastcgi_temp_path {temp / "fastcgi"};
    uwsgi_temp_path {temp / "uwsgi"};
    scgi_temp_path {temp / "scgi"};
{blocks}
}}
"""


@asynccontextmanager
async def running_nginx(directory: Path, servers: list[NginxServer]) -> AsyncIterator[None]:
    """Run one nginx (one worker, in the foreground) for `servers`, with its prefix in `directory`."""
    binary = nginx_binary()
    if binary is None:
        raise FileNotFoundError("nginx not found: run scripts/fetch-peers (or `make bench`)")
    config = write_file(directory / "nginx.conf", _config(directory, servers))
    write_file(directory / "temp" / "README", "nginx's temporary files\n")
    error_log = directory / "error.log"
    command = [str(binary), "-p", str(directory), "-c", str(config), "-e", str(error_log)]
    async with running_process(command, [server.port for server in servers], error_log):
        yield
