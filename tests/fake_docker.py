#!/usr/bin/env python3
"""A stand-in for `docker run ... kebr ARGS` of the docker image (docker/), for the recipe tests: no
container engine runs on CI. It checks what matters for a recipe's command line and runs the image's
entry point, `kebr-data ARGS` (the `kebr-data` on PATH), on this machine:

- `run` with the options the recipes use (`--rm`, `--user U:G`, `-v HOST:CONTAINER[:ro]`), image `kebr`;
- every volume is mounted at the same path inside as outside (an output folder's plan holds absolute
  media paths, so another path inside would find no video), and its host folder exists;
- every absolute path in ARGS lies in a mounted volume or in the image's `/opt/kebr/` (the
  repository's `pipelines/`, read here from this checkout).

OpenFace is the image's (`KEBR_OPENFACE_BIN`): the real binary when the caller's environment names
one, else tests/fake_openface (a real OpenFace CSV per clip).
"""
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def fail(message: str) -> None:
    print(f"fake docker: {message}", file=sys.stderr)
    raise SystemExit(125)  # docker's own exit status for errors of the docker command


def main(argv: list[str]) -> None:
    if not argv or argv[0] != "run":
        fail(f"only `docker run` is supported, got {argv[:1]}")
    args, mounts = argv[1:], []
    while args and args[0].startswith("-"):
        opt = args.pop(0)
        if opt == "--rm":
            continue
        if opt not in ("--user", "-v", "--volume") or not args:
            fail(f"unexpected option {opt}")
        value = args.pop(0)
        if opt != "--user":
            host, _, rest = value.partition(":")
            container = rest.split(":")[0]
            if host != container:
                fail(f"volume {value}: mount it at the same path inside ({host}:{host}), the plan's paths are absolute")
            if not Path(host).is_dir():
                fail(f"volume {value}: {host} is not a folder")
            mounts.append(Path(host))
    if not args or args.pop(0) != "kebr":
        fail("the image must be `kebr` (docker build -t kebr -f docker/Dockerfile .)")
    for a in args:
        if a.startswith("/") and not a.startswith("/opt/kebr/") and not any(Path(a).is_relative_to(m) for m in mounts):
            fail(f"{a} is not inside a mounted volume")
    args = [str(ROOT / a.removeprefix("/opt/kebr/")) if a.startswith("/opt/kebr/") else a for a in args]
    env = dict(os.environ)
    if not env.get("KEBR_OPENFACE_BIN"):
        env["KEBR_OPENFACE_BIN"] = str(ROOT / "tests" / "fake_openface" / "FeatureExtraction")
        env["KEBR_FAKE_OPENFACE_CSV"] = str(ROOT / "tests" / "fixtures" / "openface" / "default.csv")
    os.execvpe("kebr-data", ["kebr-data", *args], env)  # the caller's: the recipe tests put this checkout's first


if __name__ == "__main__":
    main(sys.argv[1:])
