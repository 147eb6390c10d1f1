"""TLS to RabbitMQ and Redis: the client options, and a check at start that fails with one line.

The options follow each library's own names: py-amqp takes ``ssl`` keyword
arguments (``broker_use_ssl``), redis-py ``ssl_*`` connection arguments
(``redis_backend_use_ssl``).  The server's certificate is always verified
(against ``*_TLS_CA_FILE``, or the system's CAs), and its hostname too
unless ``*_TLS_VERIFY_HOSTNAME=false``; a client certificate is sent when
the settings name one.

A certificate that does not verify is a configuration error, not an
outage: ``check`` makes the TLS handshake once at start (``run.sh`` runs it
through ``python -m workqueue.settings``) and says in one line what failed,
where a worker would otherwise retry for ever.  A server that does not
answer yet is left to the processes' own retries.
"""

from __future__ import annotations

import socket
import ssl
from typing import Any, Protocol
from urllib.parse import urlsplit

HANDSHAKE_SECONDS = 5.0


class Settings(Protocol):
    """What this module reads of ``workqueue.settings.Settings`` (which imports it: no import back)."""

    broker_urls: tuple[str, ...]
    broker_tls: bool
    result_backend: str
    result_backend_tls: bool
    rabbitmq_tls_ca_file: str
    rabbitmq_tls_cert_file: str
    rabbitmq_tls_key_file: str
    rabbitmq_tls_verify_hostname: bool
    redis_tls_ca_file: str
    redis_tls_cert_file: str
    redis_tls_key_file: str
    redis_tls_verify_hostname: bool


def amqp_options(settings: Settings) -> dict[str, Any]:
    """``broker_use_ssl``: py-amqp's ``ssl`` arguments (kombu fills ``server_hostname`` when it is None)."""
    options: dict[str, Any] = {
        "cert_reqs": ssl.CERT_REQUIRED,
        "ca_certs": settings.rabbitmq_tls_ca_file or None,
    }
    if settings.rabbitmq_tls_cert_file:
        options["certfile"] = settings.rabbitmq_tls_cert_file
        options["keyfile"] = settings.rabbitmq_tls_key_file
    if settings.rabbitmq_tls_verify_hostname:
        options["server_hostname"] = None  # kombu sets the host it connects to
    return options


def redis_options(settings: Settings) -> dict[str, Any]:
    """``redis_backend_use_ssl``: redis-py's ``ssl_*`` connection arguments."""
    options: dict[str, Any] = {
        "ssl_cert_reqs": "required",
        "ssl_ca_certs": settings.redis_tls_ca_file or None,
        "ssl_check_hostname": settings.redis_tls_verify_hostname,
    }
    if settings.redis_tls_cert_file:
        options["ssl_certfile"] = settings.redis_tls_cert_file
        options["ssl_keyfile"] = settings.redis_tls_key_file
    return options


def check(settings: Settings) -> str | None:
    """One line saying which TLS endpoint's certificate did not verify, or None."""
    endpoints = []
    if settings.broker_tls:
        for url in settings.broker_urls:
            parts = urlsplit(url)
            # kombu connects to (and verifies) 127.0.0.1 when told localhost: so does this check.
            host = "127.0.0.1" if parts.hostname == "localhost" else parts.hostname
            endpoints.append(("RabbitMQ", host, parts.port or 5671, "RABBITMQ"))
    if settings.result_backend_tls:
        parts = urlsplit(settings.result_backend)
        endpoints.append(("Redis", parts.hostname, parts.port or 6379, "REDIS"))
    for service, host, port, prefix in endpoints:
        problem = _handshake(settings, host or "", port, prefix)
        if problem:
            return f"TLS to {service} at {host}:{port}: {problem}"
    return None


def _handshake(settings: Settings, host: str, port: int, prefix: str) -> str | None:
    ca = getattr(settings, f"{prefix.lower()}_tls_ca_file")
    verify_hostname = getattr(settings, f"{prefix.lower()}_tls_verify_hostname")
    context = ssl.create_default_context(cafile=ca or None)
    context.check_hostname = verify_hostname
    cert = getattr(settings, f"{prefix.lower()}_tls_cert_file")
    if cert:
        context.load_cert_chain(cert, getattr(settings, f"{prefix.lower()}_tls_key_file"))
    try:
        with socket.create_connection((host, port), timeout=HANDSHAKE_SECONDS) as sock:
            with context.wrap_socket(sock, server_hostname=host):
                return None
    except ssl.SSLCertVerificationError as exc:
        trusted = f"the CA in {prefix}_TLS_CA_FILE" if ca else f"the system's CAs ({prefix}_TLS_CA_FILE is empty)"
        return f"the server's certificate does not verify against {trusted}: {exc.verify_message}"
    except ssl.SSLError as exc:
        return f"the TLS handshake failed: {exc.reason or exc}"
    except OSError:
        return None  # not answering (yet): the processes' own retries wait for it
