#!/usr/bin/env bash
# Build OpenFace 2.2.0's FeatureExtraction from upstream source on Debian 12 (or Ubuntu 22.04+).
# The docker image runs it too; on a plain host run it as root (apt-get) or with SKIP_APT=1.
#
#   docker/build_openface.sh build   [PREFIX]   install deps, fetch the pinned tag and its models, build,
#                                               install FeatureExtraction + models into PREFIX (/opt/openface)
#   docker/build_openface.sh runtime            install only the shared libraries FeatureExtraction needs
#
# OpenFace is licensed for academic, non-commercial research only and may not be redistributed:
# this script builds it on your machine from the authors' repository, under their licence.
set -euo pipefail

OPENFACE_REPO="${OPENFACE_REPO:-https://github.com/TadasBaltrusaitis/OpenFace.git}"
OPENFACE_TAG="${OPENFACE_TAG:-OpenFace_2.2.0}"
BUILD_DEPS=(build-essential cmake git ca-certificates wget unzip pkg-config
            libopencv-dev libdlib-dev libboost-filesystem-dev libboost-system-dev libopenblas-dev libtbb-dev)
RUNTIME_DEPS=(libopencv-core406 libopencv-imgproc406 libopencv-imgcodecs406 libopencv-videoio406
              libopencv-objdetect406 libopencv-calib3d406 libopencv-highgui406 libdlib19.1
              libboost-filesystem1.74.0 libopenblas0-pthread libtbb12)

apt_install() {
  if [[ "${SKIP_APT:-0}" == "1" ]]; then
    echo "SKIP_APT=1: make sure these are installed: $*" >&2
    return
  fi
  apt-get update
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@"
  rm -rf /var/lib/apt/lists/*
}

build() {
  local prefix="${1:-/opt/openface}"
  apt_install "${BUILD_DEPS[@]}"
  local src
  src="$(mktemp -d)"
  git clone --depth 1 --branch "${OPENFACE_TAG}" "${OPENFACE_REPO}" "${src}/OpenFace"
  cd "${src}/OpenFace"
  # The CE-CLM patch experts are a separate download; without them FeatureExtraction runs with the
  # in-repo CLNF model: pass -mloc model/main_clnf_general.txt (kebr: visual.openface_args).
  if ! bash ./download_models.sh; then
    echo "warning: model download failed; use visual.openface_args = [\"-mloc\", \"model/main_clnf_general.txt\"]" >&2
  fi
  mkdir -p build
  cd build
  cmake -D CMAKE_BUILD_TYPE=Release ..
  make -j"$(nproc)" FeatureExtraction
  mkdir -p "${prefix}/bin"
  # FeatureExtraction looks for model/, AU_predictors/ and classifiers/ beside itself
  cp -r bin/FeatureExtraction bin/model bin/AU_predictors bin/classifiers "${prefix}/bin/"
  cd /
  rm -rf "${src}"
  "${prefix}/bin/FeatureExtraction" -help >/dev/null 2>&1 || true
  echo "installed ${prefix}/bin/FeatureExtraction"
}

case "${1:-}" in
  build) shift; build "$@" ;;
  runtime) apt_install "${RUNTIME_DEPS[@]}" ;;
  *) echo "usage: $0 build [PREFIX] | runtime" >&2; exit 2 ;;
esac
