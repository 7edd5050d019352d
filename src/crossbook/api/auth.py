"""Bearer JWT authentication: HS256 only, expiry and subject required.

A trader's token has `sub` = the user id (a decimal string, as RFC 7519 wants
`sub` to be a string) and `role` = "trader"; an admin token has `sub` = "admin"
and `role` = "admin". The algorithm is pinned on decode, so a token signed with
`none` or an asymmetric algorithm is refused whatever its header says.

Known limits: no revocation list (keep `jwt_ttl_s` short); one shared secret.
"""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass

import jwt

from crossbook.api.errors import ApiCode, ApiError

ALGORITHM = "HS256"
MAX_TOKEN_CHARS = 4_096


class Role(enum.StrEnum):
    TRADER = "trader"
    ADMIN = "admin"


@dataclass(frozen=True, slots=True)
class Principal:
    role: Role
    user_id: int | None  # None for an admin token
    expires_at_s: int | None = None  # set when read from a token


class TokenCodec:
    def __init__(self, secret: str, ttl_s: int) -> None:
        assert secret, "a JWT secret is required"
        assert ttl_s > 0, ttl_s
        self._secret = secret
        self.ttl_s = ttl_s

    def issue(
        self, principal: Principal, *, ttl_s: int | None = None, now_s: int | None = None
    ) -> str:
        issued = int(time.time()) if now_s is None else now_s
        subject = "admin" if principal.role is Role.ADMIN else str(principal.user_id)
        claims = {
            "sub": subject,
            "role": str(principal.role),
            "iat": issued,
            "exp": issued + (self.ttl_s if ttl_s is None else ttl_s),
        }
        return jwt.encode(claims, self._secret, algorithm=ALGORITHM)

    def verify(self, token: str) -> Principal:
        if len(token) > MAX_TOKEN_CHARS:
            raise _unauthorized("token is too long")
        try:
            claims = jwt.decode(
                token,
                self._secret,
                algorithms=[ALGORITHM],
                options={"require": ["exp", "sub", "role"]},
            )
        except jwt.ExpiredSignatureError:
            raise _unauthorized("token has expired") from None
        except jwt.InvalidTokenError as error:
            raise _unauthorized(f"invalid token: {error}") from None
        principal = _principal(claims.get("role"), claims.get("sub"))
        return Principal(principal.role, principal.user_id, int(claims["exp"]))


def bearer_token(authorization: str | None) -> str:
    if not authorization:
        raise _unauthorized("missing Authorization: Bearer <token>")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise _unauthorized("Authorization must be: Bearer <token>")
    return token.strip()


def _principal(role: object, subject: object) -> Principal:
    if role == Role.ADMIN and subject == "admin":
        return Principal(Role.ADMIN, None)
    if role == Role.TRADER and isinstance(subject, str) and subject.isdigit():
        user_id = int(subject)
        if 0 < user_id < 2**63:
            return Principal(Role.TRADER, user_id)
    raise _unauthorized("token has an unknown role or subject")


def _unauthorized(message: str) -> ApiError:
    return ApiError(ApiCode.UNAUTHORIZED, message, headers={"WWW-Authenticate": "Bearer"})
