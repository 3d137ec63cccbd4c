"""TLS on every gRPC port, mutual TLS between services (SPEC 10), from three files named by the environment.

`TLS_CERT_FILE` + `TLS_KEY_FILE`: every server of the process serves TLS only, with this certificate. With
`TLS_CA_FILE` too, the internal services (engine, scheduler) also demand a client certificate signed by that CA,
and every internal channel presents the process's own certificate and trusts only that CA (mutual TLS); the
public API asks no client certificate (its callers are tenants, who authenticate with API keys). Unset, every
port is plaintext, as on a developer's machine. Read with nothing but the standard library and grpcio, so the
container health check can use it too.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import grpc


@dataclass(frozen=True)
class TlsFiles:
    """The process's certificate chain and key (PEM), and the CA its peers are checked against."""

    cert: bytes
    key: bytes
    ca: bytes | None = None

    @classmethod
    def load(cls, cert_file: str, key_file: str, ca_file: str = "") -> TlsFiles | None:
        """The files' contents, or None when neither certificate nor key is named; raises ValueError for half a
        configuration or a file that cannot be read."""
        if not cert_file and not key_file:
            if ca_file:
                raise ValueError("TLS_CA_FILE is set without TLS_CERT_FILE and TLS_KEY_FILE")
            return None
        if not cert_file or not key_file:
            raise ValueError("TLS_CERT_FILE and TLS_KEY_FILE go together: set both or neither")
        try:
            return cls(
                Path(cert_file).read_bytes(),
                Path(key_file).read_bytes(),
                Path(ca_file).read_bytes() if ca_file else None,
            )
        except OSError as error:
            raise ValueError(f"cannot read a TLS file: {error}") from error

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] = os.environ) -> TlsFiles | None:
        """`load` with TLS_CERT_FILE, TLS_KEY_FILE and TLS_CA_FILE from the environment."""
        return cls.load(
            environ.get("TLS_CERT_FILE", ""), environ.get("TLS_KEY_FILE", ""), environ.get("TLS_CA_FILE", "")
        )

    def server_credentials(self, *, internal: bool) -> grpc.ServerCredentials:
        """TLS for a server; an internal one demands a client certificate from the CA when there is a CA."""
        demand = internal and self.ca is not None
        return grpc.ssl_server_credentials(
            [(self.key, self.cert)], root_certificates=self.ca if demand else None, require_client_auth=demand
        )

    def channel_credentials(self) -> grpc.ChannelCredentials:
        """TLS for a channel to another service: trust the CA (else the system's roots) and show our certificate."""
        return grpc.ssl_channel_credentials(
            root_certificates=self.ca, private_key=self.key, certificate_chain=self.cert
        )


def secure_or_insecure_channel(address: str, tls: TlsFiles | None, **kwargs: object) -> grpc.Channel:
    """A blocking channel to `address`, over TLS when `tls` is given."""
    if tls is None:
        return grpc.insecure_channel(address, **kwargs)  # type: ignore[arg-type]
    return grpc.secure_channel(address, tls.channel_credentials(), **kwargs)  # type: ignore[arg-type]
