"""Lists the files the stack's S3 server image needs, one absolute path a
line: this Python's interpreter and standard library, and the installed
distributions that moto with its `s3` extra, flask and flask-cors require,
transitively (read from their metadata, so only what is installed here).

Run by deploy/compose/images/build with the python3 that has moto[server].
"""

import importlib.metadata as md
import os
import re
import sys
import sysconfig

WANTED = [("moto", {"s3"}), ("flask", set()), ("flask-cors", set())]
# Standard-library directories a server never imports.
SKIP = {"site-packages", "dist-packages", "test", "tests", "idlelib", "tkinter",
        "turtledemo", "ensurepip", "lib2to3", "pydoc_data", "__pycache__"}


def norm(name):
    return re.sub(r"[-_.]+", "-", name).lower()


def requirements(dist, extras):
    """The names `dist` requires, with the extras asked for."""
    for req in dist.requires or []:
        spec, _, marker = req.partition(";")
        name = re.split(r"[\s\[<>=!~(]", spec.strip(), maxsplit=1)[0]
        extra = re.search(r"""extra\s*==\s*['"]([^'"]+)['"]""", marker)
        if extra and extra.group(1) not in extras:
            continue
        yield name


def main():
    found = {}
    todo = list(WANTED)
    while todo:
        name, extras = todo.pop()
        if norm(name) in found:
            continue
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            if name in dict(WANTED):
                sys.exit(f"{name} is not installed for {sys.executable}: "
                         "python3 -m pip install 'moto[server]>=5,<6'")
            continue  # required only on another platform or Python
        found[norm(name)] = dist
        todo.extend((r, set()) for r in requirements(dist, extras))

    files = {os.path.realpath(sys.executable)}
    for dist in found.values():
        for f in dist.files or []:
            p = os.path.realpath(f.locate())
            if os.path.isfile(p) and "__pycache__" not in p:
                files.add(p)
    stdlib = sysconfig.get_paths()["stdlib"]
    for root, dirs, names in os.walk(stdlib):
        dirs[:] = [d for d in dirs if d not in SKIP and not d.startswith("config-")]
        files.update(os.path.join(root, n) for n in names if not n.endswith(".pyc"))
    for p in sorted(files):
        print(p)


if __name__ == "__main__":
    main()
