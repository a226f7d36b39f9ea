"""`nginxgen status`: what the running sidecar says about each instance (docs/monitoring.md).

command  ask the sidecar's GET /status (on watch.listen), print it once, redraw it, or JSON
traffic  requests and 5xx per upstream peer over the last minute, from nginx's /metrics
         (the sidecar samples with it: watch/sampler.py)
view     the sidecar's status document → rich tables, one per service
"""
