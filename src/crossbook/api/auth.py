"""Bearer JWT authentication: HS256 only, expiry and subject required.

A trader's token has `sub` = the user id (a decimal string, as RFC 7519 wants
`sub` to be a string) and `role` = "trader"; an admin token has `sub` = "admin"
and `role` = "admin". The algorithm is pinned on decode, so a token signed with
`none` or an asymmetric algorithm is refused whatever its header says.

A signed token whose subject is not a user (an id beyond the last user's) is
refused like a bad one (`Authenticator`).

Known limits: no revocation list (keep `jwt_ttl_s` short); one shared secret.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import jwt

from crossbook.api.errors import ApiCode, ApiError
from crossbook.api.params import is_id
from crossbook.engine.clock import WALL_CLOCK

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
        issued = WALL_CLOCK.now_ms() // 1000 if now_s is None else now_s
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


class Authenticator:
    """Tokens to principals: a valid signature and claims (`TokenCodec`), and a trader's
    subject must be a user that exists.

    Users are known cheaply: the store gives each new user the id after the highest
    (`ReadStore.create_user`), so the users are exactly 1..`last_user_id`, which
    the composition root reads at start-up and `user_created` advances.
    """

    def __init__(self, tokens: TokenCodec, last_user_id: int) -> None:
        assert last_user_id >= 0, last_user_id
        self.tokens = tokens
        self.last_user_id = last_user_id

    def user_created(self, user_id: int) -> None:
        self.last_user_id = max(self.last_user_id, user_id)

    def verify(self, token: str) -> Principal:
        principal = self.tokens.verify(token)
        if principal.user_id is not None and principal.user_id > self.last_user_id:
            raise _unauthorized("token names an unknown user")
        return principal


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
    if role == Role.TRADER and isinstance(subject, str) and is_id(subject):
        return Principal(Role.TRADER, int(subject))
    raise _unauthorized("token has an unknown role or subject")


def _unauthorized(message: str) -> ApiError:
    return ApiError(ApiCode.UNAUTHORIZED, message, headers={"WWW-Authenticate": "Bearer"})
