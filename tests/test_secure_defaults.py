"""Secure defaults: loopback only, secrets out of argv, logs, /status, /metrics, the journal and
the store, private file modes."""

from __future__ import annotations

import asyncio
import json
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from signer_guard import b58, keys
from signer_guard.cli import build_parser
from signer_guard.cli.serve import non_loopback_addresses, redact
from signer_guard.config import Config, ConfigError, load
from signer_guard.forge import forge_consensus
from tests.guard_proc import GuardProcess, run_cli, write_config
from tests.hostile_http import hwm_show, port_of
from tests.http_client import request, sign

MAINNET = "NetXdQprcVkpaWU"
TZ1_SECRET = "edsk4TjJWEszkHKono7XMnepVqwi37FrpbVt1KCsifJeAGimxheShG"
TZ1 = "tz1b9kV41KV9N3sp69ycLdSoZ2Ak8jXwtNPv"


def att(level: int, payload: int = 0) -> bytes:
    return forge_consensus("attestation", 21, MAINNET, level, 0, payload_hash=bytes([payload]) * 32)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@contextmanager
def umask(value: int) -> Iterator[None]:
    old = os.umask(value)
    try:
        yield
    finally:
        os.umask(old)


# -- loopback only -------------------------------------------------------------------------------
@pytest.mark.parametrize("listen", ["0.0.0.0:6732", "192.0.2.1:6732", "[::]:6732", "10.1.2.3:1"])
def test_non_loopback_listen_needs_allow_remote(listen: str) -> None:
    with pytest.raises(ConfigError, match="not loopback: set allow_remote"):
        load(None, {"listen": listen})


def test_allow_remote_needs_authorized_keys() -> None:
    with pytest.raises(ConfigError, match="allow_remote requires authorized_keys"):
        load(None, {"listen": "0.0.0.0:6732", "allow_remote": True})
    pk = keys.SecretKey.generate("ed25519").public_key.b58
    config = load(None, {"listen": "0.0.0.0:6732", "allow_remote": True, "authorized_keys": [pk]})
    assert config.allow_remote and config.authorized_keys == [pk]


@pytest.mark.parametrize("listen", ["127.0.0.1:6732", "localhost:6732", "[::1]:6732", ":6732"])
def test_loopback_listen_is_the_default_and_accepted(listen: str) -> None:
    assert Config().listen == "127.0.0.1:6732"
    assert not Config().allow_remote
    assert load(None, {"listen": listen}).listen == listen


def test_serve_refuses_a_remote_listen_address(tmp_path: Path) -> None:
    cfg = write_config(
        tmp_path / "c.toml",
        {"listen": "0.0.0.0:0", "store": str(tmp_path / "s.sqlite"), "keys": []},
    )
    r = run_cli("serve", "--config", str(cfg), timeout=30)
    assert r.returncode == 2
    assert "allow_remote" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "s.sqlite").exists()


def test_bind_check_resolves_the_host() -> None:
    """serve checks what the name resolves to, not only how it is spelled."""
    for host in ("127.0.0.1", "127.1.2.3", "::1", "localhost"):
        assert non_loopback_addresses(host) == [], host
    for host in ("0.0.0.0", "::", "192.0.2.7"):
        assert non_loopback_addresses(host) == [host], host


# -- secrets: never in argv, never echoed ----------------------------------------------------------
def test_secrets_and_passphrases_never_come_from_argv() -> None:
    """No option takes a secret or a passphrase itself: at most the name of a file holding it
    (passphrases may also come from the environment). Software keys come from the config file
    (mode 0600); the one flag that can carry a secret, `serve --key unencrypted:…`, warns."""
    parser = build_parser()
    seen: list[str] = []

    def walk(p: object) -> None:
        for action in getattr(p, "_actions", []):
            seen.extend(action.option_strings)
            choices = getattr(action, "choices", None)
            if isinstance(choices, dict):
                for sub in choices.values():
                    walk(sub)

    walk(parser)
    assert "--key" in seen
    for option in seen:
        if option.endswith("-file"):
            continue
        for word in ("pass", "secret", "password", "token", "auth-key", "auth_key", "seed"):
            assert word not in option.lower(), option


async def test_secret_on_the_command_line_warns(tmp_path: Path) -> None:
    g = GuardProcess(tmp_path, keys=[], log_level="INFO")
    try:
        await asyncio.to_thread(g.start, 20.0, ("--key", f"unencrypted:{TZ1_SECRET}"))
        assert (await sign(g.url, TZ1, att(10)))[0] == 200
    finally:
        await g.astop()
    log = g.log_text()
    assert "a secret key was given on the command line" in log
    assert TZ1_SECRET not in log


@pytest.mark.parametrize(
    "uri",
    [
        f"unencrypted:{TZ1_SECRET}x",  # a damaged secret
        f"unencryptd:{TZ1_SECRET}",  # a typo in the scheme
        "encrypted:edesk1GXwWmGjXiLHBKxGBxwmNvG21vKBh6FBxc4CyJ8adQQE2avP5vBB57ZUZ93Anm7i4k8RmsHaPzVAvpnHkFF",
    ],
)
def test_bad_key_errors_do_not_echo_the_secret(tmp_path: Path, uri: str) -> None:
    secret = uri.split(":", 1)[1]
    cfg = write_config(
        tmp_path / "c.toml",
        {"listen": "127.0.0.1:0", "store": str(tmp_path / "s.sqlite"), "keys": [uri]},
    )
    r = run_cli("serve", "--config", str(cfg), timeout=30)
    assert r.returncode == 2, r.stderr
    assert secret not in r.stderr and secret[:20] not in r.stderr, r.stderr
    assert "Traceback" not in r.stderr


def test_redact() -> None:
    text = f"bad key unencrypted:{TZ1_SECRET} and BLsk2jjZe6wQH9TwtBzJwL7xLePfEgUx"
    out = redact(text)
    assert TZ1_SECRET not in out and "BLsk2jjZe6" not in out
    assert "edsk…(redacted)" in out and "BLsk…(redacted)" in out


async def test_world_readable_config_with_a_secret_warns(tmp_path: Path) -> None:
    g = GuardProcess(tmp_path, keys=[f"unencrypted:{TZ1_SECRET}"], log_level="INFO")
    g.config_path.chmod(0o644)
    async with g:
        pass
    assert f"has mode 0644: run chmod 600 {g.config_path}" in g.log_text()
    assert TZ1_SECRET not in g.log_text()


# -- secrets never in logs, /status, /metrics, the journal or the store ---------------------------
def raw_secret(text: str) -> bytes:
    prefix = next(p for p in ("edsk", "spsk", "p2sk", "BLsk") if text.startswith(p))
    return b58.decode(prefix, text)[:32]


async def test_secrets_never_leak(tmp_path: Path) -> None:
    """A software key (tz2 here) and an upstream key with upstream_auth_key: sign, refuse, fail;
    then search every output of both guards for every secret, in b58, hex and raw bytes."""
    client_key = keys.SecretKey.generate("ed25519")  # the guard's upstream_auth_key
    tz2 = keys.SecretKey.generate("secp256k1")  # a software key of the guard itself
    upstream = GuardProcess(
        tmp_path / "upstream",
        keys=[f"unencrypted:{TZ1_SECRET}"],
        authorized_keys=[client_key.public_key.b58],
        name="upstream",
    )
    async with upstream:
        guard = GuardProcess(
            tmp_path / "guard",
            keys=[f"{upstream.url}{TZ1}", f"unencrypted:{tz2.b58}"],
            upstream_auth_key=client_key.b58,
        )
        async with guard:
            for level in (100, 101):
                assert (await sign(guard.url, TZ1, att(level)))[0] == 200
                assert (await sign(guard.url, tz2.public_key.pkh, att(level)))[0] == 200
            assert (await sign(guard.url, TZ1, att(101, payload=3)))[0] == 409
            assert (await sign(guard.url, tz2.public_key.pkh, att(101, payload=3)))[0] == 409
            assert (await request("POST", f"{guard.url}keys/{TZ1}", body=b'"zz"'))[0] == 400
            outputs = {}
            for path in ("status", "metrics", "authorized_keys", f"keys/{TZ1}"):
                status, raw = await request("GET", guard.url + path)
                assert status == 200
                outputs[path] = raw
            _, outputs["upstream status"] = await request("GET", upstream.url + "status")
            outputs["hwm show"] = (await hwm_show(guard.config["store"])).encode()
            assert port_of(guard.url) != port_of(upstream.url)
        await asyncio.sleep(0.1)
    for g in (guard, upstream):
        outputs[f"{g.name} log"] = g.log_path.read_bytes()
        outputs[f"{g.name} journal"] = g.journal.read_bytes()
        for f in Path(g.config["store"]).parent.iterdir():
            if f.name.startswith("store.sqlite"):
                outputs[f"{g.name} {f.name}"] = f.read_bytes()
    assert json.loads(outputs["status"])["state"] == "active"
    secrets = {
        "tz1 (upstream's key)": TZ1_SECRET,
        "tz2 software key": tz2.b58,
        "upstream_auth_key": client_key.b58,
    }
    configs = guard.config_path.read_bytes() + upstream.config_path.read_bytes()
    for what, secret in secrets.items():
        assert secret.encode() in configs  # the control: the search finds what is there
        raw = raw_secret(secret)
        needles = [secret.encode(), secret[:24].encode(), raw, raw.hex().encode()]
        for where, blob in outputs.items():
            for needle in needles:
                assert needle not in blob, f"{what} found in {where}"


# -- file modes ------------------------------------------------------------------------------------
async def test_files_are_private_even_with_a_permissive_umask(tmp_path: Path) -> None:
    """Store, WAL, lock file, journal: 0600; the directories the guard creates: 0700. The guard
    sets its own umask (077), so a careless service manager's umask 000 changes nothing; and it
    turns core dumps off."""
    state = tmp_path / "state" / "signer-guard"
    journal_dir = tmp_path / "logs" / "journal"
    with umask(0):
        g = GuardProcess(
            tmp_path / "work",
            keys=[f"unencrypted:{TZ1_SECRET}"],
            store=str(state / "store.sqlite"),
            journal=str(journal_dir / "journal.jsonl"),
        )
        async with g:
            assert (await sign(g.url, TZ1, att(5)))[0] == 200
            await asyncio.sleep(0.1)
            files = [*sorted(state.iterdir()), journal_dir / "journal.jsonl"]
            names = {f.name for f in files}
            assert {"store.sqlite", "store.sqlite-wal", "journal.jsonl"} <= names, names
            assert any(n.endswith(".lock") for n in names), names
            for f in files:
                assert mode(f) == 0o600, (f, oct(mode(f)))
            assert g.proc is not None
            limits = Path(f"/proc/{g.proc.pid}/limits").read_text()
            core = next(line for line in limits.splitlines() if line.startswith("Max core"))
            assert core.split()[4:6] == ["0", "0"], core  # no core dump can hold a key
        for d in (state, state.parent, journal_dir):
            assert mode(d) == 0o700, (d, oct(mode(d)))
        # hwm export --format octez writes private files as well (the json export to a file
        # does not yet: it uses Path.write_text, see the report)
        out = tmp_path / "export"
        store = str(state / "store.sqlite")
        r = run_cli("hwm", "export", "--store", store, "--format", "octez", str(out))
        assert r.returncode == 0, r.stderr
    assert mode(out) == 0o700
    exported = list(out.iterdir())
    assert len(exported) == 3
    for f in exported:
        assert mode(f) == 0o600, (f, oct(mode(f)))
