"""The broker over TLS with the certificate verified (deploy/BROKER.md): ``rediss://`` URLs with
``ssl_cert_reqs=required&ssl_ca_certs=<the broker's CA>``, as `manage.py broker_acl --broker`
prints them.

A CA and the broker's certificate are made here; a real Redis 7 listens on TLS only, with the
generated aclfile; the central worker and a real agent run the everyday loop through it. A broker
whose certificate another CA signed (an impostor in the path) is refused, also for a ``rediss://``
URL that names no CA; with ``ssl_cert_reqs=none`` it is not, and the agent hands it its password.
"""

import datetime
import ipaddress
import os
import re
import subprocess
import sys
from urllib.parse import urlsplit

import pytest
import redis
from celery import Celery
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from django.conf import settings
from kombu.exceptions import OperationalError

from cmdb.hosts.choices import KeyStateChoices as Key
from cmdb.hosts.models import Host
from cmdb.jobs.choices import HostTaskStateChoices as State
from cmdb.jobs.models import HostTask
from deploy import broker
from deploy.local import Fleet
from tests.support.cli import dispatch, wait_state
from tests.support.factories import make_host
from tests.support.fleet import ROOT, free_port, redis7, remember_keys, wait_for
from wire import transport

pytestmark = [pytest.mark.fleet, pytest.mark.django_db(transaction=True)]

IP = "127.0.1.113"  # auto-accepted (tests.support.fleet.AUTO_ACCEPTED)
USER = transport.agent_username(IP)
SERVER = "cmdb-server"
E_UNVERIFIED = "certificate verify failed"


# --- Certificates, as an operator's CA would make them ----------------------------------------
def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _pem(folder, stem: str, cert, key) -> tuple:
    cert_path, key_path = folder / f"{stem}.pem", folder / f"{stem}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))  # fmt: skip
    key_path.chmod(0o600)
    return cert_path, key_path


def make_ca(folder, name: str):
    """A CA: (its certificate's path, its certificate, its key)."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(name)).issuer_name(_name(name))
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    return _pem(folder, name, cert, key)[0], cert, key


def make_broker_cert(folder, stem: str, ca_cert, ca_key) -> tuple:
    """The broker's certificate for 127.0.0.1 (and localhost), signed by the CA: (cert, key)."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    names = [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("broker")).issuer_name(ca_cert.subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    return _pem(folder, stem, cert, key)


# --- The broker, the central worker and an agent over TLS --------------------------------------
@pytest.fixture(scope="module")
def tls(tmp_path_factory, process_env, django_db_blocker):
    binary = redis7()
    run_dir = tmp_path_factory.mktemp("tls")
    certs = run_dir / "certs"
    certs.mkdir()
    ca_path, ca_cert, ca_key = make_ca(certs, "fleet-ca")
    cert, key = make_broker_cert(certs, "broker", ca_cert, ca_key)
    rogue_path, rogue_cert, rogue_key = make_ca(certs, "rogue-ca")
    port = free_port()
    address = f"rediss://127.0.0.1:{port}/0?ssl_cert_reqs=required&ssl_ca_certs={ca_path}"
    out = subprocess.run([sys.executable, str(ROOT / "manage.py"), "broker_acl", "--server", IP,
                          "--broker", address], cwd=ROOT, env={**os.environ, **process_env},
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert out.returncode == 0, out.stderr
    urls = {urlsplit(u).username: u for u in re.findall(r"^REDIS_URL=(\S+)$", out.stderr, re.M)}
    aclfile = run_dir / "users.acl"
    aclfile.write_text(out.stdout)
    fleet = Fleet(run_dir, {**process_env, "REDIS_URL": urls[SERVER]})
    try:
        tls_files = broker.TLSFiles(cert=cert, key=key, ca=ca_path)
        fleet.start_redis(binary, broker.server_options(port, aclfile, tls_files))
        fleet.start_central(concurrency=2, name="central-tls")
        agent_env = {"REDIS_URL": urls[USER], "CMDB_AGENT_REMOTE_CONTROL": "0"}
        fleet.start_agent(IP, concurrency=1, extra_env=agent_env)
        remember_keys(fleet, [IP])
        with django_db_blocker.unblock():
            wait_for(lambda: Host.objects.filter(ip=IP, key_state=Key.ACCEPTED).exists(), 60,
                     "the agent to register over TLS")  # fmt: skip
        yield {"urls": urls, "port": port, "ca": ca_path, "certs": certs, "binary": binary,
               "rogue": (rogue_path, rogue_cert, rogue_key), "run_dir": run_dir}  # fmt: skip
    finally:
        fleet.stop_all()


def agent_url(tls, port: int | None = None, query: str | None = None) -> str:
    """The agent's URL, to another port or with other TLS parameters."""
    parts = urlsplit(tls["urls"][USER])
    netloc = parts.netloc if port is None else parts.netloc.rsplit(":", 1)[0] + f":{port}"
    return parts._replace(netloc=netloc, query=parts.query if query is None else query).geturl()


def connect_as_the_agent(url: str) -> None:
    """Connect with the agent's own Celery settings (workers.config: wire.transport)."""
    app = Celery("tls-probe", set_as_current=False)
    app.config_from_object(transport.celery_config(url, settings.CMDB["CENTRAL_QUEUE"], 2))
    with app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0)
        conn.default_channel.client.ping()


@pytest.fixture(scope="module")
def impostor(tls):
    """A broker in the path: TLS with a certificate for 127.0.0.1 that another CA signed."""
    _, rogue_cert, rogue_key = tls["rogue"]
    cert, key = make_broker_cert(tls["certs"], "impostor", rogue_cert, rogue_key)
    port = free_port()
    data = tls["run_dir"] / "impostor"
    data.mkdir()
    proc = subprocess.Popen([tls["binary"], "--port", "0", "--tls-port", str(port),
                             "--tls-cert-file", str(cert), "--tls-key-file", str(key),
                             "--tls-auth-clients", "no", "--bind", "127.0.0.1", "--dir", str(data),
                             "--save", "", "--appendonly", "no"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    probe = redis.Redis(port=port, ssl=True, ssl_cert_reqs="none", socket_connect_timeout=1)

    def up() -> bool:
        try:
            return probe.ping()
        except redis.ConnectionError:
            return False

    try:
        wait_for(up, 20, "the impostor to listen")
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_the_agent_and_the_server_run_the_everyday_loop_over_verified_tls(tls, manage):
    make_host(IP)
    cli = lambda *args: manage(*args, env={"REDIS_URL": tls["urls"][SERVER]})  # noqa: E731

    job = dispatch(cli, "echo over tls", IP)

    task = wait_state(HostTask.objects.get(job_id=job).task_id, {State.OK, State.ERROR}, 60)
    assert (task.state, task.stdout_head) == (State.OK, "over tls\n")


def test_the_broker_speaks_no_plain_text(tls):
    with pytest.raises(redis.ConnectionError):
        redis.Redis(port=tls["port"], socket_connect_timeout=2, socket_timeout=2).ping()


def test_a_broker_whose_certificate_another_ca_signed_is_refused(tls, impostor):
    with pytest.raises(OperationalError, match=E_UNVERIFIED):
        connect_as_the_agent(agent_url(tls, port=impostor))


def test_a_client_that_trusts_another_ca_refuses_the_real_broker(tls):
    trusts_another = f"ssl_cert_reqs=required&ssl_ca_certs={tls['rogue'][0]}"
    with pytest.raises(OperationalError, match=E_UNVERIFIED):
        connect_as_the_agent(agent_url(tls, query=trusts_another))


def test_rediss_without_certificate_options_verifies_against_the_systems_cas(tls, impostor):
    """kombu alone would take this URL as ssl_cert_reqs=none (and only warn): the shared
    settings (wire.transport.tls_options) make it verify; no system CA signed the impostor's."""
    with pytest.raises(OperationalError, match=E_UNVERIFIED):
        connect_as_the_agent(agent_url(tls, port=impostor, query=""))


def test_with_ssl_cert_reqs_none_the_agent_gives_its_password_to_an_impostor(tls, impostor):
    """Why deploy/BROKER.md says never: the handshake with the impostor succeeds and the agent
    authenticates to it (the impostor does not know the user: a real one would say OK)."""
    with pytest.raises(OperationalError, match="invalid username-password pair"):
        connect_as_the_agent(agent_url(tls, port=impostor, query="ssl_cert_reqs=none"))
