#!/usr/bin/env python3
"""Checks the #include lines of src/ against the allowed module dependencies.

The allowed arrows are read from docs/architecture.md (between <!-- deps:begin --> and
<!-- deps:end -->), so the page and the check cannot disagree. Fails (exit 1) when:
  - a file of module A includes a header of module B and A -> B is not allowed;
  - a file outside the oneDNN modules includes oneDNN;
  - a header listed as oneDNN-free reaches oneDNN through its includes (transitively);
  - a folder of src/ is missing from the table, or the table names a folder that does not exist.

Usage: check_deps.py [REPO_ROOT]      check_deps.py --self-test
"""
import os
import re
import sys
import tempfile

INCLUDE = re.compile(r'^\s*#\s*include\s*([<"])([^>"]+)[>"]')
DNNL = re.compile(r'^(dnnl|oneapi/dnnl)')


def read_rules(root):
    path = os.path.join(root, "docs", "architecture.md")
    text = open(path, encoding="utf-8").read()
    m = re.search(r"<!-- deps:begin -->(.*?)<!-- deps:end -->", text, re.S)
    if not m:
        sys.exit(f"{path}: no <!-- deps:begin --> ... <!-- deps:end --> block: restore it")
    allowed, onednn, dnnl_free = {}, set(), []
    for n, line in enumerate(m.group(1).splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("```"):
            continue
        if line.startswith("onednn:"):
            onednn = set(line.split(":", 1)[1].split())
        elif line.startswith("onednn-free headers:"):
            dnnl_free = line.split(":", 1)[1].split()
        elif "->" in line:
            mod, deps = line.split("->", 1)
            allowed[mod.strip()] = set(deps.split())
        else:
            sys.exit(f"{path}: deps block line {n} is not 'module -> deps': {line!r}")
    return allowed, onednn, dnnl_free


def includes(path):
    out = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for n, line in enumerate(f, 1):
            m = INCLUDE.match(line)
            if m:
                out.append((n, m.group(1), m.group(2)))
    return out


def check(root):
    src = os.path.join(root, "src")
    allowed, onednn, dnnl_free = read_rules(root)
    errors = []
    folders = {d for d in os.listdir(src) if os.path.isdir(os.path.join(src, d))}
    for d in sorted(folders - set(allowed)):
        errors.append(f"src/{d}/: a module missing from docs/architecture.md's dependency table")
    for d in sorted(set(allowed) - folders):
        errors.append(f"docs/architecture.md names module '{d}', which src/ does not have")
    for dirpath, _, files in os.walk(src):
        for name in sorted(files):
            if not name.endswith((".h", ".cpp")):
                continue
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, src)
            mod = rel.split(os.sep)[0]
            for n, kind, inc in includes(path):
                if kind == "<":
                    if DNNL.match(inc) and mod not in onednn:
                        errors.append(f"src/{rel}:{n}: {mod} includes <{inc}>; only "
                                      f"{', '.join(sorted(onednn))} may use oneDNN")
                    continue
                target = inc.split("/")[0]
                if "/" not in inc or target == mod or target not in allowed:
                    continue
                if target not in allowed.get(mod, set()):
                    ok = " ".join(sorted(allowed.get(mod, set()))) or "nothing"
                    errors.append(f"src/{rel}:{n}: {mod} may not include {inc} ({mod} depends "
                                  f"on {ok}; see docs/architecture.md)")
    # oneDNN-free headers: follow quoted includes transitively.
    for header in dnnl_free:
        seen, stack, chain = set(), [(header, [header])], None
        while stack and chain is None:
            h, path = stack.pop()
            if h in seen:
                continue
            seen.add(h)
            full = os.path.join(src, h)
            if not os.path.exists(full):
                continue
            for _, kind, inc in includes(full):
                if kind == "<" and DNNL.match(inc):
                    chain = path + [f"<{inc}>"]
                    break
                if kind == '"':
                    stack.append((inc, path + [inc]))
        if chain:
            errors.append(f"src/{header} must not reach oneDNN, but: {' -> '.join(chain)}")
    return errors


def self_test():
    with tempfile.TemporaryDirectory() as d:
        os.makedirs(os.path.join(d, "docs"))
        for m in ("core", "ops", "graph", "data", "train"):
            os.makedirs(os.path.join(d, "src", m))
        open(os.path.join(d, "docs", "architecture.md"), "w").write(
            "<!-- deps:begin -->\n```\ncore ->\nops -> core\ngraph -> core ops\ndata -> core\n"
            "train -> core data graph\nonednn: ops\nonednn-free headers: graph/ir.h\n```\n"
            "<!-- deps:end -->\n")

        def write(rel, text):
            open(os.path.join(d, "src", rel), "w").write(text)

        write("ops/kernel.h", "#include <dnnl.hpp>\n")
        write("graph/ir.h", '#include "core/status.h"\n')
        write("data/loader.h", '#include "core/status.h"\n')
        write("train/trainer.cpp", '#include "data/loader.h"\n#include "graph/ir.h"\n')
        if check(d):
            return f"a clean tree was refused: {check(d)}"
        write("data/bad.cpp", '#include "train/trainer.h"\n')
        write("graph/ir.h", '#include "ops/kernel.h"\n')
        write("train/fast.cpp", "#include <dnnl.hpp>\n")
        got = "\n".join(check(d))
        for want in ("src/data/bad.cpp:1: data may not include train/trainer.h",
                     "src/graph/ir.h must not reach oneDNN, but: graph/ir.h -> ops/kernel.h -> <dnnl.hpp>",
                     "src/train/fast.cpp:1: train includes <dnnl.hpp>"):
            if want not in got:
                return f"missed: {want}\ngot:\n{got}"
    return None


def main():
    if sys.argv[1:] == ["--self-test"]:
        err = self_test()
        print("check_deps self-test: " + ("FAILED\n" + err if err else "ok"))
        return 1 if err else 0
    root = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..")
    errors = check(root)
    for e in errors:
        print(e)
    if errors:
        print(f"{len(errors)} dependency violation(s): fix the include, or change the arrows in "
              "docs/architecture.md if the architecture really changed")
        return 1
    print("dependencies: every #include in src/ follows docs/architecture.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
