# regenie compiled from its public source, as a one-layer image holding /regenie and /LICENSE, which
# docker/gwas/Dockerfile copies from (./dev images --regenie source builds it first; about 30 minutes on 2 cores,
# and it needs github.com and PyPI). The same build as the binary the tests check against (../shared/tools/regenie).
#
# BASE: Debian 12 (pin by digest for a reproducible build). REGENIE_VERSION / REGENIE_COMMIT choose regenie's
# release; the build stops if the tag is not that commit. BGEN_VERSION is the bgen library regenie links
# (PyPI's bgenix source package carries the whole bgen tree and its waf build).
ARG BASE=debian:bookworm-slim

FROM ${BASE} AS build
ARG REGENIE_VERSION=v4.1.2
ARG REGENIE_COMMIT=5f924b9
ARG BGEN_VERSION=1.1.7.post2
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends g++ cmake make gfortran \
      zlib1g-dev python3 python3-pip git ca-certificates \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /build
RUN pip download --no-deps --no-binary :all: "bgenix==${BGEN_VERSION}" \
 && tar xzf "bgenix-${BGEN_VERSION}.tar.gz" && mv "bgenix-${BGEN_VERSION}" bgen \
 && cd bgen && python3 waf configure && python3 waf -j"$(nproc)"
RUN git clone --depth 1 --branch "${REGENIE_VERSION}" https://github.com/rgcgithub/regenie.git \
 && git -C regenie rev-parse HEAD | grep -q "^${REGENIE_COMMIT}" \
 && mkdir regenie/build && cd regenie/build \
 && BGEN_PATH=/build/bgen cmake .. && make -j"$(nproc)" \
 && ./regenie --version

FROM scratch
COPY --from=build /build/regenie/build/regenie /regenie
COPY --from=build /build/regenie/LICENSE /LICENSE
