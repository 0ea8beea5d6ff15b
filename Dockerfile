# Edgeshield edge node image: a static binary on an empty base.
#
# There is no compiler stage on purpose: the binary is built on the host with
# CGO_ENABLED=0 (so it runs without libc) and the build needs no registry, so
# the image can be made on machines that cannot pull images. `make image` does:
#
#   CGO_ENABLED=0 go build -trimpath -ldflags '…' -o bin/image/edgeshield ./cmd/edgeshield
#   cp /etc/ssl/certs/ca-certificates.crt bin/image/     # roots for https origins and ACME
#   docker build -t edgeshield:latest .
#
# Run (every config key can be set as EDGESHIELD_<PATH>, see configs/edge.yaml):
#
#   docker run --rm -p 8080:8080 edgeshield:latest                     # demo origin built in
#   docker run --rm -p 8080:8080 -e EDGESHIELD_ORIGIN_URL=https://origin.example.com edgeshield:latest
#   docker run --rm -v $PWD/configs:/etc/edgeshield:ro -e EDGESHIELD_CONFIG=/etc/edgeshield/edge.yaml …
#
# configs/docker-compose.yml runs a 3-node cluster in front of the demo origin.
FROM scratch

# Root certificates: Go reads /etc/ssl/certs/ca-certificates.crt; a scratch
# image has none, and without them every https origin and ACME CA fails.
COPY bin/image/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY bin/image/edgeshield /edgeshield

# The built-in default listens on 127.0.0.1, which is unreachable from outside
# a container. The admin listener stays on loopback unless you set
# EDGESHIELD_ADMIN_LISTEN and, with it, EDGESHIELD_ADMIN_TOKEN (required off
# loopback).
ENV EDGESHIELD_LISTEN=0.0.0.0:8080
# server.drain_delay defaults to 0 (a process on a laptop stops at once); in a
# container behind a load balancer `docker stop` must first turn readiness
# 503 and wait for the balancer to notice. 5 s fits Docker's default 10 s
# stop timeout. The public readiness path is what a HEALTHCHECK or a load
# balancer polls without the admin token:
#   /edgeshield probe --once --targets http://127.0.0.1:8080/.well-known/edgeshield/ready
# (configs/docker-compose.yml does; no HEALTHCHECK here because the same
# image also runs `edgeshield origin` and `edgeshield bench`).
ENV EDGESHIELD_SERVER_DRAIN_DELAY=5s EDGESHIELD_SERVER_HEALTH_PATH=/.well-known/edgeshield/ready

# nobody:nogroup. Every default port is above 1024, so no capability is needed.
# tls.storage must point to a writable volume when TLS is on (the image has no
# writable directory of its own).
USER 65534:65534

# 8080 public HTTP, 8443 HTTPS (tls.mode; HTTP/3 on 8443/udp with tls.http3:
# publish it as -p 443:8443/udp too), 9090 admin, 7946 gossip (TCP and
# UDP, memberlist), 7947 peer listener for shield hops.
EXPOSE 8080 8443 8443/udp 9090 7946/tcp 7946/udp 7947

# SIGTERM starts the graceful drain (readiness 503, server.drain_delay, leave
# the cluster, finish in-flight requests). Give `docker stop -t` at least
# drain_delay plus the longest request.
STOPSIGNAL SIGTERM
# As PID 1, `edgeshield run` supervises its serving process (run --supervise),
# so an upgrade in place does not end the container: `docker cp` a new binary
# to /edgeshield, then `docker kill --signal USR2 <container>` (README,
# Upgrades). Do not run with --init: PID 1 must be edgeshield.
ENTRYPOINT ["/edgeshield"]
CMD ["run"]
