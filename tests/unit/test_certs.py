"""`./run.sh certs`: the development CA and server certificate verify under strict X.509 checking
(Python >= 3.13 clients, e.g. the container image's, enable VERIFY_X509_STRICT by default)."""

from __future__ import annotations

import socket
import ssl
import threading
from pathlib import Path

import pytest

from addons.cli.certs import make_certs


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_the_server_certificate_verifies_strictly_for_each_name(tmp_path: Path, host: str) -> None:
    paths = make_certs(tmp_path, ["127.0.0.1", "localhost"])
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(paths["server.pem"])
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()

        def serve() -> None:
            conn, _ = listener.accept()
            try:
                server.wrap_socket(conn, server_side=True).close()
            except (ssl.SSLError, OSError):
                conn.close()

        t = threading.Thread(target=serve, daemon=True)
        t.start()
        client = ssl.create_default_context(cafile=str(paths["ca.crt"]))
        client.verify_flags |= ssl.VERIFY_X509_STRICT
        with socket.create_connection(listener.getsockname()) as raw, \
                client.wrap_socket(raw, server_hostname=host) as tls:
            assert tls.version() is not None
        t.join(5)
