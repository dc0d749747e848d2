"""Dashboard users, their log-in sessions and the API's bearer tokens.

Nothing secret is stored: passwords as argon2id hashes (argon2-cffi's
defaults, RFC 9106's low-memory profile), session and API tokens as the
SHA-256 of a 256-bit random value that only its holder keeps. A random
token needs no slow hash: it cannot be guessed from its digest.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import secrets
from dataclasses import dataclass

import asyncpg
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

ROLES = ("admin", "viewer")
MIN_PASSWORD = 10
HASHER = PasswordHasher()
# Verified when the e-mail is unknown, so a wrong address costs as long as a wrong password.
DUMMY_HASH = HASHER.hash(secrets.token_urlsafe(16))

INSERT_USER = "INSERT INTO dashboard_users (email, password_hash, role) VALUES ($1, $2, $3) RETURNING user_id"
SET_PASSWORD = "UPDATE dashboard_users SET password_hash = $2, role = $3 WHERE email = $1 RETURNING user_id"
USER_BY_EMAIL = "SELECT user_id, email, password_hash, role FROM dashboard_users WHERE email = $1"
ANY_USER = "SELECT EXISTS (SELECT 1 FROM dashboard_users)"
LIST_USERS = "SELECT user_id, email, role, created_at FROM dashboard_users ORDER BY user_id"

INSERT_SESSION = """
INSERT INTO dashboard_sessions (token_hash, user_id, csrf_token, expires_at) VALUES ($1, $2, $3, $4)
"""
SESSION = """
SELECT u.user_id, u.email, u.role, s.csrf_token
FROM dashboard_sessions s JOIN dashboard_users u USING (user_id)
WHERE s.token_hash = $1 AND s.expires_at > now()
"""
DELETE_SESSION = "DELETE FROM dashboard_sessions WHERE token_hash = $1"
DELETE_EXPIRED = "DELETE FROM dashboard_sessions WHERE expires_at <= now()"

INSERT_TOKEN = "INSERT INTO dashboard_api_tokens (name, token_hash, role) VALUES ($1, $2, $3) RETURNING token_id"
# Marks the use at most once a minute, so reads do not turn into a write each.
TOKEN = """
WITH t AS (
    SELECT token_id, name, role, last_used_at FROM dashboard_api_tokens
    WHERE token_hash = $1 AND revoked_at IS NULL
), used AS (
    UPDATE dashboard_api_tokens a SET last_used_at = now() FROM t
    WHERE a.token_id = t.token_id AND (t.last_used_at IS NULL OR t.last_used_at < now() - interval '1 minute')
)
SELECT token_id, name, role FROM t
"""
LIST_TOKENS = """
SELECT token_id, name, role, created_at, last_used_at, revoked_at FROM dashboard_api_tokens ORDER BY token_id
"""
REVOKE_TOKEN = """
UPDATE dashboard_api_tokens SET revoked_at = now() WHERE token_id = $1 AND revoked_at IS NULL RETURNING token_id
"""


@dataclass(frozen=True)
class Principal:
    """Who a request acts for: a logged-in user or an API token."""

    name: str
    role: str
    csrf_token: str | None = None  # sessions only

    @property
    def admin(self) -> bool:
        """May change jobs, sites, recipients and tokens."""
        return self.role == "admin"


def digest(token: str) -> bytes:
    """The stored form of a session or API token."""
    return hashlib.sha256(token.encode()).digest()


def new_token() -> str:
    """256 random bits, URL-safe."""
    return secrets.token_urlsafe(32)


def check_role(role: str) -> str:
    """``role`` if it is admin or viewer."""
    if role not in ROLES:
        raise ValueError(f"role must be admin or viewer, got {role!r}")
    return role


def normal_email(email: str) -> str:
    """E-mail as stored: trimmed, lower-case; refuses what cannot be an address."""
    email = email.strip().lower()
    if not 3 <= len(email) <= 320 or "@" not in email or not email.isprintable() or " " in email:
        raise ValueError(f"not an e-mail address: {email!r}")
    return email


async def add_user(conn: asyncpg.Connection, email: str, password: str, role: str = "viewer",
                   replace: bool = False) -> int:
    """Create a user (or, with ``replace``, set an existing one's password and role); return the id."""
    email, role = normal_email(email), check_role(role)
    if len(password) < MIN_PASSWORD:
        raise ValueError(f"the password must have at least {MIN_PASSWORD} characters")
    hashed = await asyncio.to_thread(HASHER.hash, password)
    if replace:
        user_id = await conn.fetchval(SET_PASSWORD, email, hashed, role)
        if user_id is not None:
            return int(user_id)
    try:
        return int(await conn.fetchval(INSERT_USER, email, hashed, role))
    except asyncpg.UniqueViolationError as exc:
        raise ValueError(f"a user {email} exists already") from exc


async def first_admin(conn: asyncpg.Connection, email: str = "admin@localhost") -> str | None:
    """When nobody can log in yet, make an admin and return the one-time password; else None."""
    if await conn.fetchval(ANY_USER):
        return None
    password = secrets.token_urlsafe(12)
    await add_user(conn, email, password, "admin")
    return password


async def verify_password(conn: asyncpg.Connection, email: str, password: str) -> asyncpg.Record | None:
    """The user row when the password is right, else None (same work for an unknown e-mail)."""
    row = await conn.fetchrow(USER_BY_EMAIL, email.strip().lower())
    stored = row["password_hash"] if row else DUMMY_HASH
    try:
        await asyncio.to_thread(HASHER.verify, stored, password)
    except (VerificationError, InvalidHashError):
        return None
    return row


async def open_session(conn: asyncpg.Connection, user_id: int, hours: int) -> str:
    """Start a session; returns the token for the cookie (only its hash is kept)."""
    token = new_token()
    expires = dt.datetime.now(dt.UTC) + dt.timedelta(hours=hours)
    await conn.execute(DELETE_EXPIRED)
    await conn.execute(INSERT_SESSION, digest(token), user_id, new_token(), expires)
    return token


async def session_principal(conn: asyncpg.Connection, token: str) -> Principal | None:
    """The user of a live session, or None."""
    row = await conn.fetchrow(SESSION, digest(token))
    return Principal(row["email"], row["role"], row["csrf_token"]) if row else None


async def close_session(conn: asyncpg.Connection, token: str) -> None:
    """Log out."""
    await conn.execute(DELETE_SESSION, digest(token))


async def create_token(conn: asyncpg.Connection, name: str, role: str = "viewer") -> tuple[int, str]:
    """A new API token: (id, the secret to hand over once)."""
    name = name.strip()
    if not name or len(name) > 200 or not name.isprintable():
        raise ValueError("a token needs a printable name of at most 200 characters")
    token = "pt_" + new_token()
    token_id = await conn.fetchval(INSERT_TOKEN, name, digest(token), check_role(role))
    return int(token_id), token


async def token_principal(conn: asyncpg.Connection, token: str) -> Principal | None:
    """The holder of a live API token, or None."""
    row = await conn.fetchrow(TOKEN, digest(token))
    return Principal(f"token {row['name']}", row["role"]) if row else None


async def list_tokens(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    """Every token, revoked ones included (never the secret)."""
    return list(await conn.fetch(LIST_TOKENS))


async def revoke_token(conn: asyncpg.Connection, token_id: int) -> bool:
    """Revoke a token; False when there is no live token with that id."""
    return await conn.fetchval(REVOKE_TOKEN, token_id) is not None
