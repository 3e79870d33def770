"""Caller identity: the issuer's published key set and access-token verification."""
