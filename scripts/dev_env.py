"""Small helpers for the `dev` script.

    python scripts/dev_env.py req-hash FILE    hash of FILE and its -r includes
    python scripts/dev_env.py shell            effective settings, as shell lines
    python scripts/dev_env.py secret-key PATH  make PATH (mode 600) with a new key
    python scripts/dev_env.py check-bind ADDR  exit 1 with a hint when gunicorn
                                               could not listen on ADDR (host:port)

`shell` reads the environment and the project's .env the way kaireon/settings.py
does (process environment first, .env fills the gaps; an empty value counts as
unset), so that `./dev run` agrees with the settings about the state dir, the
Redis and the secret key.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shlex
import socket
import sys
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
_INCLUDES = {"-r", "--requirement", "-c", "--constraint"}


def _requirement_files(path: Path, seen: set[Path]) -> list[Path]:
    path = path.resolve()
    if path in seen:
        return []
    seen.add(path)
    files = [path]
    for line in path.read_text().splitlines():
        parts = line.strip().split(None, 1)
        if len(parts) == 2 and parts[0] in _INCLUDES:
            files += _requirement_files(path.parent / parts[1].strip(), seen)
    return files


def req_hash(name: str) -> str:
    digest = hashlib.sha256()
    digest.update(f"python {sys.version_info[:3]}\n".encode())
    for file in _requirement_files(Path(name), set()):
        digest.update(f"{file.name}\n".encode())
        digest.update(file.read_bytes())
    return digest.hexdigest()


def _effective(name: str, default: str) -> str:
    value = os.environ.get(name, "").strip()
    return value or default


def shell() -> str:
    import environ  # django-environ, from the project's virtualenv

    environ.Env.read_env(BASE_DIR / ".env", overwrite=False)
    state = Path(_effective("KAIREON_STATE_DIR", str(BASE_DIR / "var")))
    if not state.is_absolute():
        state = BASE_DIR / state
    values = {
        "KAIREON_STATE_DIR": str(state),
        "KAIREON_REDIS_PORT": _effective("KAIREON_REDIS_PORT", "6390"),
        "KAIREON_BIND": _effective("KAIREON_BIND", "127.0.0.1:8000"),
        "DEV_REDIS_URL_SET": "1" if _effective("REDIS_URL", "") else "0",
        "DEV_SECRET_KEY_SET": "1" if _effective("SECRET_KEY", "") else "0",
        "DEV_DEBUG": _effective("DEBUG", "0"),
    }
    return "".join(f"{key}={shlex.quote(value)}\n" for key, value in values.items())


def secret_key(path: str) -> None:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        target.chmod(0o600)
        if target.read_text().strip():
            return
        fd = os.open(target, os.O_WRONLY | os.O_TRUNC)
    with os.fdopen(fd, "w") as handle:
        handle.write(secrets.token_urlsafe(50) + "\n")
    print(f"dev: generated a SECRET_KEY in {target} (mode 600)", file=sys.stderr)


def bind_problem(address: str) -> str:
    """Why gunicorn could not listen on `address` (KAIREON_BIND), or "".

    Tries the bind gunicorn will do (SO_REUSEADDR, as gunicorn sets it), so
    a port held by any listener is found before gunicorn's retries end in
    "Connection in use" with no word of the variable to change."""
    if address.startswith(("unix:", "fd://")):
        return ""  # a socket file or an inherited fd: nothing to probe
    host, sep, port_text = address.rpartition(":")
    if not sep:
        host, port_text = address, "8000"  # gunicorn's default port
    host = host.strip("[]") or "0.0.0.0"
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        return f"KAIREON_BIND={address!r} is not host:port (e.g. 127.0.0.1:8000)"
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, int(port_text)))
    except OSError as exc:
        following = int(port_text) + 1 if int(port_text) < 65535 else 8001
        return (
            f"cannot listen on {address} ({exc.strerror or exc}): another program "
            f"uses it. Stop that program, or set KAIREON_BIND to a free address, "
            f"e.g. KAIREON_BIND={host}:{following} ./dev run"
        )
    return ""


def main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "req-hash":
        print(req_hash(argv[1]))
    elif argv == ["shell"]:
        sys.stdout.write(shell())
    elif len(argv) == 2 and argv[0] == "secret-key":
        secret_key(argv[1])
    elif len(argv) == 2 and argv[0] == "check-bind":
        problem = bind_problem(argv[1])
        if problem:
            print(f"dev: error: {problem}", file=sys.stderr)
            return 1
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
