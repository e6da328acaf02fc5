"""users: accounts (argon2 hashes), login issuing RS256 JWTs, JWKS, ``user.registered``."""
