#!/bin/sh
# The gateway image's entrypoint: render a verified config, start nginx on it, then keep
# it in step with the registry. nginxgen is the container's main process: when it exits
# (SIGTERM: after finishing the current step), the container stops and nginx with it.
set -eu
spec="${NGINXGEN_SPEC:-/etc/nginxgen/nginxgen.yaml}"
conf="${NGINXGEN_CONF:-/run/nginxgen/nginx.conf}"  # the spec's nginx.output
nginx="${NGINX_BINARY:-nginx}"
nginxgen watch --once -c "$spec" --log-format json
"$nginx" -c "$conf" -g "daemon on;"
exec nginxgen watch -c "$spec" --log-format json "$@"
