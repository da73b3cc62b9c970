# linegate's container image: a static binary on a distroless base, run as
# a non-root user, its data on the /data volume.
#
#   docker build -t linegate .
#   docker run -d --name linegate -p 127.0.0.1:8080:8080 \
#     -v linegate-data:/data -v /etc/linegate:/etc/linegate:ro linegate
#
# /etc/linegate/linegate.yaml is deploy/linegate.yaml with data_dir: /data
# and listen: 0.0.0.0:8080; keep admin_listen on 127.0.0.1:8081 (the
# health check probes it inside the container). Put the HTTPS proxy
# (deploy/nginx, deploy/caddy) in front: LINE only calls HTTPS.
#
# Tested without a Docker engine (deploy/docker_test.go): the build
# command below gives a static binary that serves and answers the health
# check, and this file names a non-root USER, a VOLUME and a HEALTHCHECK.

FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# The SQLite driver is pure Go: no cgo, no libc, a static binary.
RUN CGO_ENABLED=0 go build -trimpath -o /out/linegate ./cmd/linegate
RUN mkdir -p /out/data

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/linegate /usr/local/bin/linegate
# The volume's mount point, owned by the image's user (65532, nonroot), so
# that a new named volume starts owned by it too.
COPY --from=build --chown=65532:65532 /out/data /data
USER 65532:65532
VOLUME ["/data"]
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
  CMD ["/usr/local/bin/linegate", "health", "-url", "http://127.0.0.1:8081/readyz"]
ENTRYPOINT ["/usr/local/bin/linegate"]
CMD ["serve", "-config", "/etc/linegate/linegate.yaml"]
