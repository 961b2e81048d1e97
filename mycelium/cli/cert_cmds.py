"""TLS commands: ``cert dev`` (a local CA and a certificate), ``reload-certs``, and the check of
``up``'s TLS options before anything starts (docs/reference.md#tls)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from mycelium.errors import BadInput
from mycelium.operator.client import ControlClient

from .app import HomeOption, app, err, home_of, out

if TYPE_CHECKING:
    from mycelium.edge.tls import TLSSettings

__all__ = ["cert_dev_cmd", "reload_certs_cmd", "reload_on_hup", "tls_settings"]

cert_app = typer.Typer(help="TLS certificates for the edge (docs/reference.md#tls).",
                       no_args_is_help=True)
app.add_typer(cert_app, name="cert")


@cert_app.command("dev")
def cert_dev_cmd(
    home: HomeOption = None,
    hosts: Annotated[list[str] | None, typer.Option(
        "--host", help="A name the certificate covers (repeatable; an IP becomes an IP "
                       "entry; default: localhost and 127.0.0.1)")] = None,
) -> None:
    """Write a local CA (made once, then reused) and a certificate for the names into
    <home>/tls/; print the CA certificate, the certificate and its key, one path per line."""
    from mycelium.edge.certgen import DEFAULT_NAMES, write_dev_certs

    names = list(hosts) if hosts else list(DEFAULT_NAMES)
    directory = home_of(home).root / "tls"
    try:
        written = write_dev_certs(directory, names)
    except ValueError as exc:
        raise BadInput(str(exc)) from None
    except OSError as exc:
        raise BadInput(f"cannot write {directory}: {exc.strerror or exc}") from None
    for path in (written.ca, written.cert, written.key):
        out(str(path))


@app.command("reload-certs")
def reload_certs_cmd(home: HomeOption = None) -> None:
    """Have the running edge re-read its TLS certificates: new handshakes use them, open
    connections keep theirs. Exit 1 (the old ones stay in use) if a pair is bad."""
    ControlClient(home_of(home)).request("reload-certs")
    out("certificates reloaded")


def reload_on_hup(mesh: Any) -> None:
    """SIGHUP to ``up``: reload the certificates on a thread (the handler must not block);
    a bad pair is one error line on stderr (and a supervision-log record)."""
    import threading

    def reload() -> None:
        why = mesh.reload_certs()
        if why is not None:
            err(f"error: {why}")

    threading.Thread(target=reload, name="reload-certs", daemon=True).start()


def tls_settings(cfg: Any, cert: Path | None, key: Path | None, port: int | None,
                 redirect: bool) -> TLSSettings | None:
    """``up``'s TLS listener from its options and ``[edge]``, every pair loaded once to check it.

    Raises:
        BadInput: only one of ``--tls-cert``/``--tls-key``; ``--https-redirect`` or
            ``[[edge.certs]]`` without them; a file unreadable or bad, a key that does not
            match its certificate.
    """
    from mycelium.edge.tls import CertPair, CertStore, TLSSettings

    if (cert is None) != (key is None):
        raise BadInput("--tls-cert and --tls-key go together")
    if cert is None or key is None:
        if redirect or cfg.edge.certs:
            raise BadInput("--https-redirect and [[edge.certs]] need --tls-cert FILE "
                           "--tls-key FILE (the default certificate)")
        return None
    pairs = (CertPair(cert, key), *(CertPair(Path(c), Path(k)) for c, k in cfg.edge.certs))
    settings = TLSSettings(port=cfg.edge.tls_port if port is None else port, pairs=pairs,
                           redirect=redirect)
    CertStore(settings.pairs)  # raises TLSConfigError (bad input) naming the file
    return settings
