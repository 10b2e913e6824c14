# syntax=docker/dockerfile:1
# The shardctl controller image: the static-ish `shardctl` binary on a distroless, non-root base.
# The build step is scripts/build-release.sh, the same script CI runs, so the image build cannot
# rot unnoticed.

FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY . .
RUN scripts/build-release.sh /out/shardctl

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/shardctl /usr/local/bin/shardctl
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/shardctl"]
CMD ["--help"]
