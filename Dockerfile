# syntax=docker/dockerfile:1
# Two images from one file (docs/deploy.md):
#   docker build --target sidecar -t nginxgen:sidecar .   # nginxgen alone, non-root
#   docker build --target gateway -t nginxgen:gateway .   # Debian's nginx + Lua + nginxgen
# The sidecar runs next to an nginx/OpenResty container; the config, its Lua modules
# (nginxgen-lua/) and nginx.pid live on a volume both mount at /run/nginxgen.

ARG PYTHON=3.11

# Wheels for nginxgen (templates and Lua inside) and its dependencies.
FROM python:${PYTHON}-slim-bookworm AS wheels
WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY nginxgen ./nginxgen
COPY templates ./templates
COPY lua ./lua
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

# The sidecar: Python, nginxgen, nothing else; runs as uid 10001.
FROM python:${PYTHON}-slim-bookworm AS sidecar
RUN useradd --system --uid 10001 --user-group --home-dir /nonexistent \
        --shell /usr/sbin/nologin nginxgen \
    && install -d -o 10001 -g 10001 -m 0755 /run/nginxgen /etc/nginxgen
COPY --from=wheels /wheels /tmp/wheels
RUN pip install --no-cache-dir --no-index --find-links /tmp/wheels nginxgen \
    && rm -rf /tmp/wheels
USER 10001:10001
WORKDIR /run/nginxgen
EXPOSE 9180
ENTRYPOINT ["nginxgen"]
CMD ["watch", "-c", "/etc/nginxgen/nginxgen.yaml", "--log-format", "json"]

# One container: Debian's nginx with the Lua module, and nginxgen keeping it in step.
FROM debian:bookworm-slim AS gateway
COPY packaging/debian-packages.txt /tmp/debian-packages.txt
RUN apt-get update \
    && sed -e 's/#.*//' -e '/^[[:space:]]*$/d' /tmp/debian-packages.txt \
       | xargs apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/* /tmp/debian-packages.txt \
    && install -d -m 0755 /run/nginxgen /etc/nginxgen
COPY --from=wheels /wheels /tmp/wheels
RUN python3 -m venv /opt/nginxgen \
    && /opt/nginxgen/bin/pip install --no-cache-dir --no-index --find-links /tmp/wheels nginxgen \
    && ln -s /opt/nginxgen/bin/nginxgen /usr/local/bin/nginxgen \
    && rm -rf /tmp/wheels
COPY packaging/gateway-entrypoint.sh /usr/local/bin/gateway-entrypoint
ENV NGINXGEN_SPEC=/etc/nginxgen/nginxgen.yaml
EXPOSE 8080 9180
ENTRYPOINT ["/usr/local/bin/gateway-entrypoint"]
