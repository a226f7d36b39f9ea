"""TLS material the gateway serves or presents: certificate checks before a render."""
