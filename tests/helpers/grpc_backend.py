"""A gRPC backend: the standard health service (grpc.health.v1) plus one method that
says which backend answered, over h2c or TLS, on a free loopback port.

`nginxgen.test.Backend/Name` takes and returns raw bytes (no generated code): it answers
the backend's name, so a failover test can tell the instances apart.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

NAME_SERVICE = "nginxgen.test.Backend"
NAME_METHOD = f"/{NAME_SERVICE}/Name"


class GrpcBackend:
    def __init__(self, name: str = "grpc", *, tls: tuple[bytes, bytes] | None = None) -> None:
        """`tls`: (certificate chain PEM, key PEM) to serve gRPC over TLS instead of h2c."""
        self.name = name
        self.tls = tls
        self.calls = 0
        self._lock = threading.Lock()
        self._server: grpc.Server | None = None
        self._health: health.HealthServicer | None = None
        self.port = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _name(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        with self._lock:
            self.calls += 1
        return self.name.encode()

    def start(self) -> GrpcBackend:
        server = grpc.server(ThreadPoolExecutor(max_workers=4))
        self._health = health.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        handler = grpc.method_handlers_generic_handler(
            NAME_SERVICE, {"Name": grpc.unary_unary_rpc_method_handler(self._name)}
        )
        server.add_generic_rpc_handlers((handler,))
        if self.tls is None:
            self.port = server.add_insecure_port("127.0.0.1:0")
        else:
            chain, key = self.tls
            credentials = grpc.ssl_server_credentials([(key, chain)])
            self.port = server.add_secure_port("127.0.0.1:0", credentials)
        server.start()
        self._server = server
        self.set_serving(True)
        return self

    def set_serving(self, serving: bool) -> None:
        """What the health service answers, for the whole server and for Backend."""
        assert self._health is not None, "not started"
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for service in ("", NAME_SERVICE):
            self._health.set(service, status)

    def stop(self) -> None:
        """Stop at once: open calls fail, as they would if the process died."""
        if self._server is not None:
            self._server.stop(grace=None).wait(10)
            self._server = None

    def __enter__(self) -> GrpcBackend:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def grpc_channel(
    port: int, *, authority: str | None = None, root_certificates: bytes | None = None
) -> grpc.Channel:
    """A channel to 127.0.0.1:`port`. `authority`: the :authority (virtual host) and,
    under TLS (`root_certificates` given), the SNI and certificate name."""
    target = f"127.0.0.1:{port}"
    options: list[tuple[str, Any]] = []
    if authority:
        options.append(("grpc.default_authority", authority))
    if root_certificates is None:
        return grpc.insecure_channel(target, options=options)
    if authority:
        options.append(("grpc.ssl_target_name_override", authority))
    credentials = grpc.ssl_channel_credentials(root_certificates=root_certificates)
    return grpc.secure_channel(target, credentials, options=options)


def health_status(channel: grpc.Channel, service: str = "", timeout: float = 5.0) -> str:
    """SERVING, NOT_SERVING, ...; raises grpc.RpcError when the call fails."""
    stub = health_pb2_grpc.HealthStub(channel)
    answer = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status))


def backend_name(channel: grpc.Channel, timeout: float = 5.0) -> str:
    """Which backend answered NAME_METHOD."""
    call = channel.unary_unary(NAME_METHOD)
    return bytes(call(b"", timeout=timeout)).decode()
