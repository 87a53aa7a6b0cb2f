#!/usr/bin/env python3
"""Replays the Dockerfile's build stage on this machine, without a Docker engine.

It reads the Dockerfile (nothing of it is restated here): in a scratch directory that starts
empty, it copies exactly the files each COPY line of the build stage names from the build
context, runs each RUN line (with `sh -c`, as Docker does) in the WORKDIR, mapping the image's
absolute paths (the WORKDIR's, and those the runtime stage copies from, such as /app and /data)
into the scratch directory, then checks that every source the runtime stage copies from the
build stage exists. This machine has the same Debian and Rust toolchain as the build stage's
base image, so a RUN line that works here works there; a file a RUN line needs but no COPY line
copied fails here as it would in `docker build`.

Usage: scripts/dockerfile-replay.py [--dockerfile Dockerfile] [--context .] [--keep]
Exit status 0 when the stage builds and the runtime stage's sources exist.
"""
import argparse
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time


def instructions(path):
    """(keyword, arguments) for each instruction, continuation lines joined, comments dropped."""
    logical, current = [], ""
    with open(path) as f:
        for raw in f:
            line = raw.rstrip("\n")
            if not current and (not line.strip() or line.lstrip().startswith("#")):
                continue
            if line.lstrip().startswith("#"):
                continue  # a comment inside a continued instruction
            if line.endswith("\\"):
                current += line[:-1] + " "
                continue
            logical.append(current + line)
            current = ""
    if current:
        logical.append(current)
    result = []
    for text in logical:
        keyword, _, rest = text.strip().partition(" ")
        result.append((keyword.upper(), rest.strip()))
    return result


def stages(parsed):
    """[(name, base, [(keyword, arguments), ...])] in order."""
    found = []
    for keyword, rest in parsed:
        if keyword == "FROM":
            words = rest.split()
            words = [w for w in words if not w.startswith("--")]
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else str(len(found))
            found.append((name, words[0], []))
        elif found:
            found[-1][2].append((keyword, rest))
    return found


def copy_parts(rest):
    """(options, sources, destination) of a COPY line (shell form or JSON form)."""
    words = shlex.split(rest)
    options = {}
    while words and words[0].startswith("--"):
        key, _, value = words.pop(0)[2:].partition("=")
        options[key] = value
    if rest.lstrip().startswith("[") or (words and words[0].startswith("[")):
        import json

        words = json.loads(rest[rest.index("["):])
    return options, words[:-1], words[-1]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dockerfile", default="Dockerfile")
    parser.add_argument("--context", default=".")
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory")
    args = parser.parse_args()
    context = os.path.abspath(args.context)
    all_stages = stages(instructions(os.path.join(context, args.dockerfile)))
    if len(all_stages) < 2:
        sys.exit("the Dockerfile has no separate build stage to replay")
    runtime = all_stages[-1]
    copies_from = [
        copy_parts(rest)
        for keyword, rest in runtime[2]
        if keyword == "COPY" and "--from=" in rest
    ]
    build_names = {options["from"] for options, _, _ in copies_from}
    build = next(s for s in all_stages if s[0] in build_names)
    print(f"replaying stage {build[0]!r} (FROM {build[1]}) of {args.dockerfile}")

    scratch = tempfile.mkdtemp(prefix="dockerfile-replay.")
    workdir = "/"
    # Image paths that live in the scratch directory: the WORKDIRs' and the runtime's sources'.
    roots = {
        path.strip("/").split("/")[0]
        for keyword, rest in build[2]
        if keyword == "WORKDIR"
        for path in [rest]
    }
    for _, sources, _ in copies_from:
        roots.update(s.strip("/").split("/")[0] for s in sources if s.startswith("/"))
    pattern = re.compile(r"(?<![\w./-])/(" + "|".join(map(re.escape, sorted(roots))) + r")(?=[/\s;&|'\")]|$)")

    def host(image_path):
        full = image_path if image_path.startswith("/") else os.path.join(workdir, image_path)
        return os.path.join(scratch, os.path.normpath(full).lstrip("/"))

    env = {k: v for k, v in os.environ.items() if k != "CARGO_TARGET_DIR"}
    try:
        for keyword, rest in build[2]:
            if keyword == "WORKDIR":
                workdir = rest if rest.startswith("/") else os.path.join(workdir, rest)
                os.makedirs(host(workdir), exist_ok=True)
            elif keyword == "ENV":
                for pair in shlex.split(rest):
                    key, _, value = pair.partition("=")
                    env[key] = value
            elif keyword == "COPY":
                options, sources, dest = copy_parts(rest)
                if "from" in options:
                    sys.exit(f"COPY --from inside the build stage is not replayed: {rest}")
                target = host(dest)
                for source in sources:
                    origin = os.path.join(context, source)
                    if not os.path.exists(origin):
                        sys.exit(f"COPY {source}: not in the build context")
                    if os.path.isdir(origin):
                        shutil.copytree(origin, target, dirs_exist_ok=True)
                    else:
                        into = target if (dest.endswith("/") or len(sources) > 1) else None
                        if into:
                            os.makedirs(into, exist_ok=True)
                            shutil.copy2(origin, os.path.join(into, os.path.basename(source)))
                        else:
                            os.makedirs(os.path.dirname(target), exist_ok=True)
                            shutil.copy2(origin, target)
                print(f"COPY {' '.join(sources)} -> {dest}")
            elif keyword == "RUN":
                command = pattern.sub(lambda m: os.path.join(scratch, m.group(1)), rest)
                print(f"RUN {rest}", flush=True)
                started = time.monotonic()
                done = subprocess.run(["sh", "-c", command], cwd=host(workdir), env=env)
                if done.returncode != 0:
                    sys.exit(f"RUN failed (exit {done.returncode}): {rest}")
                print(f"    ok in {time.monotonic() - started:.0f} s", flush=True)
            elif keyword in ("ARG", "LABEL", "EXPOSE", "USER", "VOLUME", "SHELL"):
                continue
            else:
                sys.exit(f"instruction {keyword} is not replayed")
        missing = [
            source
            for _, sources, _ in copies_from
            for source in sources
            if not os.path.exists(os.path.join(scratch, source.lstrip("/")))
        ]
        if missing:
            sys.exit(f"the runtime stage copies what the build stage did not make: {missing}")
        for _, sources, dest in copies_from:
            print(f"runtime COPY --from={build[0]} {' '.join(sources)} {dest}: present")
        print("the build stage replays from exactly the files it copies")
    finally:
        if args.keep:
            print(f"scratch directory kept: {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
