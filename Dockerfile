# One image for the controller and the node plugin (the mode is a flag of `lustre-csi serve`).
# Build: docker build -t ghcr.io/lustre-csi/lustre-csi:0.1.0 .
#
# Stage 1 generates the gRPC stubs from proto/csi.proto and builds a wheel; stage 2 installs
# only that wheel and its run-time dependencies on a slim base with mount(8) from util-linux.
FROM python:3.11.11-slim-bookworm AS build
WORKDIR /src
RUN pip install --no-cache-dir grpcio-tools==1.85.1
COPY pyproject.toml README.md ./
COPY proto/ proto/
COPY hack/generate_stubs.py hack/
COPY csi/ csi/
COPY provisioner/ provisioner/
RUN python hack/generate_stubs.py \
 && pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM python:3.11.11-slim-bookworm
# util-linux/mount give mount(8), umount(8) and findmnt; the Lustre client itself (mount.lustre,
# lfs, kernel modules) comes from the host, as modules must match the node's kernel.
RUN apt-get update \
 && apt-get install -y --no-install-recommends mount util-linux \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
# Non-root by default (the CLI client needs nothing more); the controller and node pods set
# runAsUser 0 and privileged, because mounting is what they do.
USER 65532:65532
ENTRYPOINT ["lustre-csi"]
CMD ["--help"]
