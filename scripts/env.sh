# Sourced by the project's scripts: one fixed cache outside the clone, keyed by
# toolchain version, so that a fresh clone on the same machine builds warm.
STREAMFABRIC_CACHE="${STREAMFABRIC_CACHE:-/var/cache/streamfabric}"
rustc_key="$(rustc -V | tr -cs 'A-Za-z0-9.' '-' | sed 's/-$//')"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$STREAMFABRIC_CACHE/cargo/$rustc_key}"
export STREAMFABRIC_CACHE
mkdir -p "$CARGO_TARGET_DIR"
