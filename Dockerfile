# One image for the controller and the node plugin (the mode is a flag of `lustre-csi serve`).
# Build: docker build -t ghcr.io/lustre-csi/lustre-csi:0.1.0 .
#
# BASE is any Debian bookworm image with Python 3.11+ and its venv module: the default is the
# registry's python:slim; hack/images/build.sh passes a base it made itself from Debian's own
# packages (mmdebstrap, no registry needed) and builds this same file with buildah.
#
# Stage 1 generates the gRPC stubs from proto/csi.proto and builds a wheel; stage 2 installs
# only that wheel and its run-time dependencies, in a virtualenv (Debian's own python3 refuses
# pip installs outside one), with mount(8) from util-linux.
ARG BASE=python:3.11.11-slim-bookworm

FROM ${BASE} AS build
WORKDIR /src
RUN python3 -m venv /opt/build \
 && /opt/build/bin/pip install --no-cache-dir grpcio-tools==1.85.1
COPY pyproject.toml README.md ./
COPY proto/ proto/
COPY hack/generate_stubs.py hack/
COPY csi/ csi/
COPY provisioner/ provisioner/
RUN /opt/build/bin/python hack/generate_stubs.py \
 && /opt/build/bin/pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM ${BASE}
# util-linux/mount give mount(8), umount(8) and findmnt; the Lustre client itself (mount.lustre,
# lfs, kernel modules) comes from the host, as modules must match the node's kernel.
RUN apt-get update \
 && apt-get install -y --no-install-recommends mount util-linux \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /wheels /wheels
RUN python3 -m venv /opt/lustre-csi \
 && /opt/lustre-csi/bin/pip install --no-cache-dir /wheels/*.whl \
 && rm -rf /wheels
ENV PATH=/opt/lustre-csi/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
# Non-root by default (the CLI client needs nothing more); the controller and node pods set
# runAsUser 0 and privileged, because mounting is what they do. The user is in /etc/passwd:
# kubelet passes the image's uid alone, and the runtime takes the group from there (without
# an entry a pod would run as 65532:0, group root).
RUN groupadd --gid 65532 lustre-csi \
 && useradd --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent \
    --shell /usr/sbin/nologin lustre-csi
USER 65532:65532
ENTRYPOINT ["lustre-csi"]
CMD ["--help"]
