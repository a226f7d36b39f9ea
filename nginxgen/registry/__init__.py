"""One HTTP layer for everything that talks to a registry: session pool, TLS, login,
secret scrubbing and error wording, with one client per registry kind that the sources
(which read) and the agent (which writes) share."""

from __future__ import annotations

from .errors import Gone, HttpStatusError, RegistryConfigError, RegistryError, UnusableVersion

__all__ = ["Gone", "HttpStatusError", "RegistryConfigError", "RegistryError", "UnusableVersion"]
