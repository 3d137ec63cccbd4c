"""A real local SMTP server for delivery tests (aiosmtpd, in its own thread): records what it receives, refuses
what it is told to, speaks STARTTLS with a self-signed certificate for 127.0.0.1, and checks a login if asked.

The certificate is made fresh for each server (`cryptography`), so a client trusts it only when given its PEM
(`ca_pem`): how the tests show the SMTP provider verifies TLS by default.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import ssl
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.support.processes import free_port


@dataclass(frozen=True)
class ReceivedMail:
    """One accepted message: its envelope, the parsed message, and whether it came over TLS and logged in."""

    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage
    over_tls: bool
    login: str | None

    def text(self) -> str:
        """The plain-text part."""
        part = self.message.get_body(("plain",))
        return "" if part is None else str(part.get_content())

    def html(self) -> str:
        """The HTML part."""
        part = self.message.get_body(("html",))
        return "" if part is None else str(part.get_content())


@dataclass
class SmtpServer:
    """What the server was told and what it received; `port` and `ca_pem` address and trust it."""

    port: int = 0
    ca_pem: str = ""
    # Answers to the next DATA commands (e.g. 451, 554), then 250.
    data_codes: list[int] = field(default_factory=list)
    # Recipients answered 550 at RCPT.
    refused_recipients: set[str] = field(default_factory=set)
    received: list[ReceivedMail] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def mail_to(self, address: str) -> list[ReceivedMail]:
        """What reached `address`, in order."""
        with self._lock:
            return [mail for mail in self.received if address in mail.rcpt_tos]

    # aiosmtpd hooks (run on the server's thread).

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:
        if address in self.refused_recipients:
            return "550 5.1.1 no such user here"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self._lock:
            code = self.data_codes.pop(0) if self.data_codes else 250
            if code != 250:
                return f"{code} {'try again later' if code < 500 else 'refused'}"
            login = session.auth_data.login.decode() if isinstance(session.auth_data, LoginPassword) else None
            self.received.append(
                ReceivedMail(
                    mail_from=envelope.mail_from,
                    rcpt_tos=list(envelope.rcpt_tos),
                    message=message_from_bytes(envelope.original_content, policy=default),
                    over_tls=session.ssl is not None,
                    login=login,
                )
            )
        return "250 Message accepted for delivery"


@dataclass(frozen=True)
class Certificate:
    """A self-signed certificate for 127.0.0.1 and localhost: its files and its PEM (what a client must trust)."""

    cert_path: Path
    key_path: Path
    pem: str


@contextmanager
def self_signed_certificate() -> Iterator[Certificate]:
    """A fresh certificate (and key) in a temporary directory, removed afterwards."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kalcifer test smtp")])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    pem = certificate.public_bytes(serialization.Encoding.PEM).decode()
    with tempfile.TemporaryDirectory() as directory:
        cert_path, key_path = Path(directory) / "cert.pem", Path(directory) / "key.pem"
        cert_path.write_text(pem)
        key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        yield Certificate(cert_path, key_path, pem)


@contextmanager
def running_smtp(
    *, login: tuple[str, str] | None = None, port: int | None = None, certificate: Certificate | None = None
) -> Iterator[SmtpServer]:
    """An SMTP server on 127.0.0.1 (on `port`, else a free one) offering STARTTLS with `certificate` (else a fresh
    one), and, with `login`, AUTH after STARTTLS, checking that pair."""
    with contextlib.ExitStack() as stack:
        if certificate is None:
            certificate = stack.enter_context(self_signed_certificate())
        server = SmtpServer(port=port or free_port(), ca_pem=certificate.pem)

        def authenticate(smtp: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
            given = (data.login.decode(), data.password.decode()) if isinstance(data, LoginPassword) else None
            ok = login is not None and given == login
            return AuthResult(success=ok, handled=False, auth_data=data if ok else None)

        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls.load_cert_chain(certificate.cert_path, certificate.key_path)
        controller = Controller(
            server,
            hostname="127.0.0.1",
            port=server.port,
            tls_context=tls,
            authenticator=authenticate if login is not None else None,
            auth_require_tls=True,
        )
        controller.start()
        try:
            yield server
        finally:
            controller.stop()
