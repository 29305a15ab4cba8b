#!/usr/bin/env bash
# Serve a zoo export base path with the stock TensorFlow Serving docker image.
#
#   export/deploy/tf_serving.sh [--dry-run] BASE [extra tensorflow_model_server flags...]
#   export/deploy/tf_serving.sh --write-config BASE DIR
#
# BASE is what `zoo export ... --to BASE` wrote: BASE/<name>/<version>/saved_model.pb for each
# model, and BASE/models.config listing every model that has a SavedModel version.
#
# Environment:
#   TFS_IMAGE  image to run (default tensorflow/serving:2.21.0, see "Image" below)
#   REST_PORT  host port for REST, /v1 and Prometheus metrics (default 8501)
#   GRPC_PORT  host port for gRPC (default 8500)
#
# Image: TF Serving versions follow TensorFlow's, and the zoo pins TensorFlow 2.21, so the
# matching image is tensorflow/serving:2.21.0. Caveat: the newest TF Serving source tag I could
# read is 2.20.0 (tensorflow_serving/workspace.bzl there pins tensorflow/text v2.20.0); the
# 2.21.0 tag is inferred from tensorflow-serving-api 2.21.0 being published. If that image cannot be
# pulled, run with TFS_IMAGE=tensorflow/serving:2.20.0: it links every TF Text op the zoo's
# text exports use (FastBertNormalize, FastWordpieceTokenizeWithOffsets,
# TFText>FastWordpieceDetokenize; see README.md).
#
# Paths: the exporter writes models.config with base_path set to the *host's* absolute path at
# export time (e.g. base_path: '/home/me/exports/digits'). Inside the container the models live
# under /models, so that file cannot be given to TF Serving as is. This script writes a copy in
# which every base_path becomes /models/<last path component>, mounts each model directory
# there read-only, and mounts the copy as /models/models.config next to batching.txt and
# monitoring.config from this directory. The exporter's own file is left untouched (the next
# `zoo export` rewrites it anyway). `--write-config BASE DIR` writes the same three files into
# DIR, for building an image with the models baked in (see kubernetes.yaml); `zoo serve`
# reads that models.config too. (Exporting with `--to /models` on the host also works: then the
# paths agree and no rewrite is needed.)
#
# New versions published under BASE/<name>/ are picked up within a second
# (--file_system_poll_wait_seconds=1); the exporter publishes atomically, so TF Serving never
# sees a half-written version. Adding a *model* needs a restart (the config is read once).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
image=${TFS_IMAGE:-tensorflow/serving:2.21.0}
rest_port=${REST_PORT:-8501}
grpc_port=${GRPC_PORT:-8500}

die() { echo "tf_serving.sh: $*" >&2; exit 1; }
usage() { sed -n '4,5p' "${BASH_SOURCE[0]}" | sed 's/^#  *//' >&2; exit 2; }

mode=run
case "${1:-}" in
  --dry-run) mode=dry; shift ;;
  --write-config) mode=config; shift ;;
  -h|--help|"") usage ;;
esac
[[ $# -ge 1 ]] || usage
[[ -d $1 ]] || die "$1 is not a directory (expected a zoo export base path)"
base=$(cd "$1" && pwd)
shift
config="$base/models.config"
[[ -f $config ]] || die "$config does not exist: export a SavedModel there first (zoo export RUN --to $base)"

# Host model directories named by models.config (quoted with ' or ", as text protos allow).
mapfile -t model_dirs < <(sed -nE "s/^[[:space:]]*base_path:[[:space:]]*['\"]([^'\"]+)['\"].*/\1/p" "$config")
[[ ${#model_dirs[@]} -gt 0 ]] || die "$config lists no model (is any version a SavedModel?)"
declare -A seen=()
mounts=()
for dir in "${model_dirs[@]}"; do
  dir=${dir%/}
  [[ $dir == /* ]] || die "base_path '$dir' in $config is not absolute"
  [[ -d $dir ]] || die "base_path '$dir' in $config does not exist on this host"
  name=${dir##*/}
  [[ -z ${seen[$name]:-} ]] || die "two base_paths end in '$name'; they would collide under /models"
  seen[$name]=1
  mounts+=(-v "$dir:/models/$name:ro")
done

# The container-side models.config: same content, base_path -> /models/<name>.
write_config() {  # $1: output directory
  mkdir -p "$1"
  sed -E "s#^([[:space:]]*base_path:[[:space:]]*['\"]).*/([^/'\"]+)/?(['\"].*)\$#\1/models/\2\3#" \
    "$config" > "$1/models.config"
  cp "$here/batching.txt" "$here/monitoring.config" "$1/"
}

if [[ $mode == config ]]; then
  [[ $# -eq 1 ]] || usage
  write_config "$1"
  echo "wrote $1/models.config (base_path under /models), $1/batching.txt, $1/monitoring.config"
  exit 0
fi

stage=$(mktemp -d "${TMPDIR:-/tmp}/zoo-tfs.XXXXXX")
trap 'rm -rf "$stage"' EXIT
write_config "$stage"
chmod a+rx "$stage" && chmod a+r "$stage"/*

cmd=(docker run --rm --init            # --init: Ctrl-C / docker stop reach the server (it is not PID 1)
  -p "$rest_port:8501" -p "$grpc_port:8500"
  "${mounts[@]}"
  -v "$stage/models.config:/models/models.config:ro"
  -v "$stage/batching.txt:/models/batching.txt:ro"
  -v "$stage/monitoring.config:/models/monitoring.config:ro"
  # Run the binary directly: the image's entrypoint script would also pass
  # --model_name/--model_base_path (ignored once --model_config_file is set, but confusing).
  --entrypoint /usr/bin/tensorflow_model_server
  "$image"
  --model_config_file=/models/models.config      # the rewritten copy, paths under /models
  --enable_batching
  --batching_parameters_file=/models/batching.txt
  --rest_api_port=8501 --port=8500               # container ports; -p above maps them
  --file_system_poll_wait_seconds=1              # look for new versions every second
  --monitoring_config_file=/models/monitoring.config   # /monitoring/prometheus/metrics on 8501
  --enable_grpc_healthcheck_service              # grpc.health.v1 (TF Serving >= 2.15.1)
  "$@")

if [[ $mode == dry ]]; then
  printf '%q ' "${cmd[@]}"; echo
  echo "--- /models/models.config in the container (staged files are removed on exit;"
  echo "--- keep them with --write-config):"; cat "$stage/models.config"
  exit 0
fi

command -v docker >/dev/null || die "docker is not installed"
docker image inspect "$image" >/dev/null 2>&1 || docker pull "$image" ||
  die "could not pull $image; TFS_IMAGE=tensorflow/serving:2.20.0 is the newest tag verified from source"
echo "serving ${!seen[*]} from $base: REST http://localhost:$rest_port/v1/models/<name>, gRPC localhost:$grpc_port" >&2
"${cmd[@]}"
