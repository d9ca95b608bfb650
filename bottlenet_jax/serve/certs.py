"""Certificates for a trial of TLS / mutual TLS serving: a private CA, a server certificate for the
given hosts and, on request, a client certificate, made by the openssl CLI.

    python -m bottlenet_jax.serve.certs tls --client

Writes ca.crt/ca.key, server.crt/server.key (and client.crt/client.key) under the directory. For
loopback trials, tests and the load benchmark; a deployment uses certificates from its own CA.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import shutil
import subprocess

from bottlenet_jax.errors import ConfigError


def _san(hosts) -> str:
    def entry(h):
        try:
            ipaddress.ip_address(h)
            return f"IP:{h}"
        except ValueError:
            return f"DNS:{h}"

    return "subjectAltName=" + ",".join(entry(h) for h in hosts)


def make_certs(directory, *, client: bool = False, hosts=("127.0.0.1", "localhost"), days: int = 30) -> dict:
    """{file name: path} of the CA, the server's certificate and key (and the client's)."""
    if not shutil.which("openssl"):
        raise ConfigError("make_certs: the openssl command is not installed")
    os.makedirs(directory, exist_ok=True)

    def ssl(*args):
        p = subprocess.run(["openssl", *args], cwd=directory, capture_output=True, text=True)
        if p.returncode:
            raise ConfigError(f"openssl {args[0]} failed: {p.stderr.strip()[-300:]}")

    key = ["-newkey", "rsa:2048", "-nodes"]
    ca = ["-subj", "/CN=bottlenet trial CA", "-keyout", "ca.key", "-out", "ca.crt"]
    ssl("req", "-x509", *key, "-days", str(days), *ca)
    with open(os.path.join(directory, "san.ext"), "w") as f:
        f.write(_san(hosts) + "\n")
    names = ("server", "client") if client else ("server",)
    for name in names:
        ssl("req", *key, "-subj", f"/CN={name}", "-keyout", f"{name}.key", "-out", f"{name}.csr")
        sign = ["x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial"]
        ext = ["-extfile", "san.ext"] if name == "server" else []
        ssl(*sign, "-days", str(days), "-out", f"{name}.crt", *ext)
    files = ["ca.crt", "ca.key"] + [f"{n}.{e}" for n in names for e in ("crt", "key")]
    return {f: os.path.join(directory, f) for f in files}


def main(argv=None):
    p = argparse.ArgumentParser(description="A private CA and server (and client) certificates, for TLS trials.")
    p.add_argument("directory")
    p.add_argument("--client", action="store_true", help="also a client certificate (mutual TLS)")
    p.add_argument("--hosts", default="127.0.0.1,localhost", help="the server's addresses, comma-separated")
    p.add_argument("--days", type=int, default=30)
    p.add_argument("--dry_run", action="store_true", help="check the arguments, write nothing")
    a = p.parse_args(argv)
    hosts = [h for h in a.hosts.split(",") if h]
    if not hosts or a.days < 1:
        p.error("--hosts needs at least one address and --days must be >= 1")
    if a.dry_run:
        print(f"dry run: arguments ok; would write certificates for {', '.join(hosts)} under {a.directory}")
        return
    try:
        files = make_certs(a.directory, client=a.client, hosts=hosts, days=a.days)
    except ConfigError as e:
        raise SystemExit(f"error: {e}") from None
    print("\n".join(sorted(files.values())))


if __name__ == "__main__":
    main()
