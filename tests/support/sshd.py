"""A real OpenSSH server (Debian's openssh-server) for the SSH mode's tests and bench: started
on loopback addresses and a free port, with host and client keys generated in its folder (never
the system's keys, never the system's sshd), and stopped by pid."""

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

SSHD = "/usr/sbin/sshd"


@dataclass
class Sshd:
    folder: Path
    port: int
    addresses: list[str]
    client_key: Path
    host_key_line: str
    other_host_key_line: str  # a key this server does not have: "changed"
    proc: subprocess.Popen

    def log(self) -> str:
        return (self.folder / "sshd.log").read_text(errors="replace")


def _keygen(path: Path) -> str:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "", "-f", str(path)],
                   check=True)  # fmt: skip
    return path.with_suffix(".pub").read_text().strip()


def _listening(address: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((address, port), timeout=0.5):
        return True
    return False


@contextlib.contextmanager
def sshd(folder: Path, addresses: list[str], port: int, max_startups: int = 1000):
    """An sshd on ``addresses``:``port`` letting in the current user with ``client_key``."""
    if not os.path.exists(SSHD):
        raise RuntimeError("no /usr/sbin/sshd: install openssh-server (deploy/testdeps.sh)")
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    host_line = _keygen(folder / "host_ed25519")
    other_line = _keygen(folder / "other_host_ed25519")
    client_line = _keygen(folder / "client_key")
    (folder / "authorized_keys").write_text(client_line + "\n")
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # its privilege separation folder
    config = folder / "sshd_config"
    config.write_text("\n".join([
        f"Port {port}",
        *(f"ListenAddress {a}" for a in addresses),
        f"HostKey {folder / 'host_ed25519'}",
        f"PidFile {folder / 'sshd.pid'}",
        f"AuthorizedKeysFile {folder / 'authorized_keys'}",
        "StrictModes no", "UsePAM no", "PasswordAuthentication no",
        "KbdInteractiveAuthentication no", "PermitRootLogin prohibit-password",
        f"MaxStartups {max_startups}", "MaxSessions 64", "LogLevel INFO", "UseDNS no",
        "PrintMotd no", "Subsystem sftp internal-sftp", "",
    ]))  # fmt: skip
    log = open(folder / "sshd.log", "ab")  # noqa: SIM115 (the child owns it)
    proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stdout=log,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True)  # fmt: skip
    log.close()
    try:
        deadline = time.monotonic() + 15
        while not _listening(addresses[0], port):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"sshd did not start: {(folder / 'sshd.log').read_text()}")
            time.sleep(0.05)
        yield Sshd(folder, port, addresses, folder / "client_key", host_line, other_line, proc)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def have_sshd() -> bool:
    return os.path.exists(SSHD) and shutil.which("ssh-keygen") is not None
