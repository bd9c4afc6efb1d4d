#!/usr/bin/env bash
# Build OpenFace 2.2.0's FeatureExtraction from source on Debian 12 or Ubuntu 22.04/24.04.
# The docker image runs it too; on a plain host run it as root (apt-get) or with SKIP_APT=1.
#
#   docker/build_openface.sh build   [PREFIX]  install build deps, get the source (OPENFACE_SRC=DIR, a
#                                              local OpenFace tree, or a clone of OPENFACE_REPO at
#                                              OPENFACE_TAG), try the CE-CLM model download, build
#                                              out of tree, install FeatureExtraction + models into
#                                              PREFIX (/opt/openface), then run the self-check
#   docker/build_openface.sh check   [PREFIX]  self-check: run FeatureExtraction on the bundled sample
#                                              video and require a CSV with tracked frames
#   docker/build_openface.sh runtime [PREFIX]  install the shared-library packages the built binary
#                                              links to (PREFIX/runtime-packages.txt, same base image)
#
# Environment: OPENFACE_SRC, OPENFACE_REPO, OPENFACE_TAG, SKIP_APT=1 (install nothing),
# APT_CLEAN=1 (delete apt lists after installing: image builds only), JOBS (make -j).
#
# OpenFace is licensed for academic, non-commercial research only and may not be redistributed:
# this script builds it on your machine from the authors' source, under their licence.
set -euo pipefail

OPENFACE_REPO="${OPENFACE_REPO:-https://github.com/TadasBaltrusaitis/OpenFace.git}"
OPENFACE_TAG="${OPENFACE_TAG:-OpenFace_2.2.0}"
BUILD_DEPS=(build-essential cmake git ca-certificates wget pkg-config
            libopencv-dev libdlib-dev libboost-filesystem-dev libboost-system-dev libopenblas-dev libtbb-dev)
# CE-CLM patch experts (the default model); upstream's download_models.sh, with a fallback per file.
CECLM_FILES=(cen_patches_0.25_of.dat cen_patches_0.35_of.dat cen_patches_0.50_of.dat cen_patches_1.00_of.dat)
CECLM_URLS=(
  "https://www.dropbox.com/s/7na5qsjzz8yfoer/cen_patches_0.25_of.dat?dl=1 https://onedrive.live.com/download?cid=2E2ADA578BFF6E6E&resid=2E2ADA578BFF6E6E%2153072&authkey=AKqoZtcN0PSIZH4"
  "https://www.dropbox.com/s/k7bj804cyiu474t/cen_patches_0.35_of.dat?dl=1 https://onedrive.live.com/download?cid=2E2ADA578BFF6E6E&resid=2E2ADA578BFF6E6E%2153079&authkey=ANpDR1n3ckL_0gs"
  "https://www.dropbox.com/s/ixt4vkbmxgab1iu/cen_patches_0.50_of.dat?dl=1 https://onedrive.live.com/download?cid=2E2ADA578BFF6E6E&resid=2E2ADA578BFF6E6E%2153074&authkey=AGi-e30AfRc_zvs"
  "https://www.dropbox.com/s/2t5t1sdpshzfhpj/cen_patches_1.00_of.dat?dl=1 https://onedrive.live.com/download?cid=2E2ADA578BFF6E6E&resid=2E2ADA578BFF6E6E%2153070&authkey=AD6KjtYipphwBPc"
)
CLNF_MODEL=model/main_clnf_general.txt
SELFCHECK_VIDEO=selfcheck/default.wmv

apt_install() {
  if [[ "${SKIP_APT:-0}" == "1" ]]; then
    echo "SKIP_APT=1: make sure these are installed: $*" >&2
    return
  fi
  apt-get update
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@"
  if [[ "${APT_CLEAN:-0}" == "1" ]]; then
    rm -rf /var/lib/apt/lists/*
  fi
}

# Download the CE-CLM patch experts into DIR; returns 1 (and says so loudly) if any file is missing.
download_ceclm() {
  local dir="$1" ok=0 i url
  for i in "${!CECLM_FILES[@]}"; do
    local dest="${dir}/${CECLM_FILES[$i]}"
    for url in ${CECLM_URLS[$i]}; do
      if wget -q --tries=2 --timeout=30 -O "${dest}.part" "${url}" && [[ -s "${dest}.part" ]]; then
        mv "${dest}.part" "${dest}"
        break
      fi
      rm -f "${dest}.part"
    done
    [[ -s "${dest}" ]] || ok=1
  done
  if [[ "${ok}" != "0" ]]; then
    cat >&2 <<EOF
################################################################################
WARNING: the CE-CLM model download FAILED (no network, or the links moved).
FeatureExtraction's default model (model/main_ceclm_general.txt) will not load.
The CLNF model from the source tree is installed instead: kebr's visual stage
probes the binary and switches to -mloc ${CLNF_MODEL} by itself (recorded in
the run's config hash and versions); by hand, pass -mloc ${CLNF_MODEL}.
To get CE-CLM later, put ${CECLM_FILES[*]}
into PREFIX/bin/model/patch_experts/.
################################################################################
EOF
    return 1
  fi
}

source_tree() {
  local work="$1"
  if [[ -n "${OPENFACE_SRC:-}" ]]; then
    if [[ ! -f "${OPENFACE_SRC}/CMakeLists.txt" || ! -d "${OPENFACE_SRC}/exe/FeatureExtraction" ]]; then
      echo "error: OPENFACE_SRC=${OPENFACE_SRC} is not an OpenFace source tree" >&2
      exit 1
    fi
    (cd "${OPENFACE_SRC}" && pwd)
  else
    git clone --depth 1 --branch "${OPENFACE_TAG}" "${OPENFACE_REPO}" "${work}/OpenFace" >&2
    echo "${work}/OpenFace"
  fi
}

# Debian/Ubuntu packages owning the libraries BIN links to directly (their names differ per release:
# libopencv-core406 on Debian 12, libopencv-core406t64 on Ubuntu 24.04); apt brings the rest.
runtime_packages() {
  local needed
  needed="$(readelf -d "$1" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p')"
  ldd "$1" | awk '/=> \// {print $1, $3}' | while read -r name lib; do
    grep -qxF "${name}" <<<"${needed}" || continue
    dpkg -S "$(readlink -f "${lib}")" 2>/dev/null || dpkg -S "${lib}" 2>/dev/null || true
  done | cut -d: -f1 | sort -u | grep -v -E '^(libc6|libgcc-s1|libstdc\+\+6)$' || true
}

check() {
  local prefix="${1:-/opt/openface}"
  local bin="${prefix}/bin/FeatureExtraction" out args=()
  [[ -x "${bin}" ]] || { echo "self-check FAILED: ${bin} missing or not executable" >&2; return 1; }
  [[ -s "${prefix}/${SELFCHECK_VIDEO}" ]] || { echo "self-check FAILED: ${prefix}/${SELFCHECK_VIDEO} missing" >&2; return 1; }
  if [[ ! -s "${prefix}/bin/model/patch_experts/cen_patches_0.25_of.dat" ]]; then
    args=(-mloc "${CLNF_MODEL}")
  fi
  out="$(mktemp -d)"
  if ! "${bin}" "${args[@]}" -f "${prefix}/${SELFCHECK_VIDEO}" -out_dir "${out}" -2Dfp -3Dfp -pdmparams \
      -pose -aus -gaze >"${out}/log.txt" 2>&1; then
    tail -n 20 "${out}/log.txt" >&2
    echo "self-check FAILED: FeatureExtraction exited non-zero" >&2
    rm -rf "${out}"
    return 1
  fi
  local csv="${out}/default.csv" tracked
  if [[ ! -s "${csv}" ]]; then
    tail -n 20 "${out}/log.txt" >&2
    echo "self-check FAILED: no CSV written" >&2
    rm -rf "${out}"
    return 1
  fi
  # column 4 is "success" (frame, face_id, timestamp, confidence, success, ...)
  tracked="$(awk -F', *' 'NR > 1 && $5 == 1 {n++} END {print n + 0}' "${csv}")"
  rm -rf "${out}"
  if [[ "${tracked}" -lt 10 ]]; then
    echo "self-check FAILED: only ${tracked} tracked frames on the sample video" >&2
    return 1
  fi
  echo "self-check ok: ${tracked} tracked frames (model: ${args[*]:-default CE-CLM})"
}

build() {
  local prefix="${1:-/opt/openface}"
  apt_install "${BUILD_DEPS[@]}"
  local work src
  work="$(mktemp -d)"
  src="$(source_tree "${work}")"
  mkdir -p "${work}/build"
  cmake -S "${src}" -B "${work}/build" -D CMAKE_BUILD_TYPE=Release
  make -C "${work}/build" -j"${JOBS:-$(nproc)}" FeatureExtraction
  download_ceclm "${work}/build/bin/model/patch_experts" || true
  mkdir -p "${prefix}/bin/classifiers" "${prefix}/selfcheck"
  # FeatureExtraction looks for model/, AU_predictors/ and classifiers/ beside itself; upstream CMake
  # globs the classifiers from a folder that does not exist (OpenCV3.4), so copy them from the tree.
  cp -r "${work}/build/bin/FeatureExtraction" "${work}/build/bin/model" "${work}/build/bin/AU_predictors" \
    "${prefix}/bin/"
  cp "${src}"/lib/3rdParty/OpenCV/classifiers/*.xml "${prefix}/bin/classifiers/"
  cp "${src}/samples/default.wmv" "${prefix}/${SELFCHECK_VIDEO}"
  runtime_packages "${prefix}/bin/FeatureExtraction" >"${prefix}/runtime-packages.txt"
  rm -rf "${work}"
  check "${prefix}"
  echo "installed ${prefix}/bin/FeatureExtraction"
}

runtime() {
  local prefix="${1:-/opt/openface}" list
  list="${prefix}/runtime-packages.txt"
  [[ -s "${list}" ]] || { echo "error: ${list} missing: run 'build' on the same base image first" >&2; exit 1; }
  mapfile -t pkgs <"${list}"
  apt_install "${pkgs[@]}"
  check "${prefix}"
}

case "${1:-}" in
  build) shift; build "$@" ;;
  check) shift; check "$@" ;;
  runtime) shift; runtime "$@" ;;
  *) echo "usage: $0 build [PREFIX] | check [PREFIX] | runtime [PREFIX]" >&2; exit 2 ;;
esac
