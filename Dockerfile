# Natter server image: a release build of the `natter` binary on Debian.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p natter

FROM debian:bookworm-slim
COPY --from=build /src/target/release/natter /usr/local/bin/natter
EXPOSE 50000
ENTRYPOINT ["natter", "serve", "--listen", "0.0.0.0:50000"]
