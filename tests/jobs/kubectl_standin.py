#!/usr/bin/env python3
"""Stands in for `kubectl` and a one-node cluster in the Kubernetes executor's tests
(src/jobs/k8s_executor.h). No cluster runs here; this runs each applied Job's container command
as a local process, with the pod's environment (Secrets resolved) and working directory, and
answers the calls the executor makes with the API's JSON shapes:

  apply --namespace NS --filename FILE            Secrets and batch/v1 Jobs (checked first by
                                                  scripts/check_k8s_job.py: a manifest the
                                                  checker refuses is refused, as the API would)
  get jobs --namespace NS --selector K=V --output json
  get pods --namespace NS --selector job-name=NAME --output json
  delete job NAME --cascade=foreground ...        the pod gets SIGTERM, SIGKILL after the pod's
                                                  terminationGracePeriodSeconds; the Job is
                                                  listed (deletionTimestamp set) until it ends
  delete pods --selector job-name=NAME --grace-period=0 --force ...
  delete secret NAME ...

Every call is appended to STATE/calls.log, one JSON array per line, and every applied object to
STATE/applied.log, one JSON object per line. When the real kubectl is on
PATH (Debian's kubernetes-client), every --flag of a call must appear in `kubectl VERB --help`:
the executor's calls are then ones the real kubectl takes. Environment:
  KUBECTL_STANDIN_STATE   the state directory (required)
  KUBECTL_STANDIN_FAIL    a verb (apply, get, delete) that fails with a message, for error tests

What it does not model: scheduling, images, pod restarts, OOM kills, the API's admission.
"""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "scripts"))
import check_k8s_job  # noqa: E402
import yaml  # noqa: E402

STATE = os.environ.get("KUBECTL_STANDIN_STATE", "")
VALUE_FLAGS = {"--namespace", "--filename", "--selector", "--output"}


def fail(msg, code=1):
    sys.stderr.write(f"error: {msg}\n")
    sys.exit(code)


def path(*parts):
    return os.path.join(STATE, *parts)


def parse(args):
    pos, flags = [], {}
    i = 0
    while i < len(args):
        a = args[i]
        if a.startswith("--"):
            if "=" in a:
                k, v = a.split("=", 1)
            elif a in VALUE_FLAGS:
                i += 1
                k, v = a, args[i]
            else:
                k, v = a, "true"
            flags[k] = v
        else:
            pos.append(a)
        i += 1
    return pos, flags


def check_flags_with_real_kubectl(verb, flags):
    real = shutil.which("kubectl", path="/usr/bin:/usr/local/bin")
    if not real:
        return
    cache = path(f"help-{verb}.txt")
    if not os.path.exists(cache):
        # The verb's own flags and the global ones, each listed as "    [-x, ]--flag=DEFAULT:".
        text = subprocess.run([real, verb, "--help"], capture_output=True, text=True).stdout
        text += subprocess.run([real, "options"], capture_output=True, text=True).stdout
        with open(cache, "w") as f:
            f.write(text)
    text = open(cache).read()
    for k in flags:
        if not re.search(r"^\s+(-\w, )?" + re.escape(k) + "=", text, re.M):
            fail(f"unknown flag: {k} (not in `kubectl {verb} --help` nor `kubectl options`)")


def load(kind, name):
    p = path(kind, name + ".json")
    return json.load(open(p)) if os.path.exists(p) else None


def alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except OSError:
        return False


def apply(flags):
    docs = [d for d in yaml.safe_load_all(open(flags["--filename"])) if d]
    for d in docs:
        if d.get("kind") == "Job":
            errors = check_k8s_job.check_job(d, flags["--filename"])
            if errors:
                fail("; ".join(errors))
        elif d.get("kind") == "Secret":
            errors = check_k8s_job.check_secret(d, flags["--filename"])
            if errors:
                fail("; ".join(errors))
        else:
            fail(f"the stand-in takes Jobs and Secrets, not {d.get('kind')}")
    with open(path("applied.log"), "a") as f:  # what the API server received, for the tests
        for d in docs:
            f.write(json.dumps(d) + "\n")
    for d in docs:
        name = d["metadata"]["name"]
        kind = "jobs" if d["kind"] == "Job" else "secrets"
        os.makedirs(path(kind), exist_ok=True)
        if kind == "jobs" and load("jobs", name) is not None:
            print(f"job.batch/{name} unchanged")
            continue
        with open(path(kind, name + ".json"), "w") as f:
            json.dump(d, f)
        if kind == "jobs":
            runner = subprocess.Popen([sys.executable, os.path.abspath(__file__), "_run", name],
                                      start_new_session=True, stdin=subprocess.DEVNULL,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            with open(path("jobs", name + ".runner"), "w") as f:
                f.write(str(runner.pid))
        print(f"{'job.batch' if kind == 'jobs' else 'secret'}/{name} created")


def run_pod(name):
    """The pod of Job `name`: its container's command, until it ends, its deadline passes or its
    Job is deleted."""
    job = load("jobs", name)
    pod = job["spec"]["template"]["spec"]
    c = pod["containers"][0]
    env = dict(os.environ)
    env.pop("KUBECTL_STANDIN_FAIL", None)
    for e in c.get("env", []):
        if "value" in e:
            env[e["name"]] = e["value"]
        else:
            ref = e["valueFrom"]["secretKeyRef"]
            secret = load("secrets", ref["name"])
            env[e["name"]] = secret["stringData"][ref["key"]]
    workdir = c.get("workingDir", "/")
    os.makedirs(workdir, exist_ok=True)
    p = subprocess.Popen(c["command"] + c.get("args", []), env=env, cwd=workdir,
                         start_new_session=True, stdin=subprocess.DEVNULL)
    deadline = job["spec"].get("activeDeadlineSeconds")
    grace = pod.get("terminationGracePeriodSeconds", 30)
    started, termed, reason = time.time(), None, None
    while p.poll() is None:
        now = time.time()
        if os.path.exists(path("jobs", name + ".force")):
            os.killpg(p.pid, signal.SIGKILL)
        elif os.path.exists(path("jobs", name + ".deleting")):
            if termed is None:
                termed = now
                os.killpg(p.pid, signal.SIGTERM)
            elif now - termed > grace:
                os.killpg(p.pid, signal.SIGKILL)
        elif deadline and now - started > deadline:
            reason = "DeadlineExceeded"
            os.killpg(p.pid, signal.SIGKILL)
        time.sleep(0.02)
    code = p.returncode if p.returncode >= 0 else 128 - p.returncode
    end = {"exitCode": code, "reason": "Completed" if code == 0 else "Error",
           "jobReason": reason or ("" if code == 0 else "BackoffLimitExceeded")}
    tmp = path("jobs", name + ".end.tmp")
    with open(tmp, "w") as f:
        json.dump(end, f)
    os.rename(tmp, path("jobs", name + ".end"))


def end_of(name):
    p = path("jobs", name + ".end")
    return json.load(open(p)) if os.path.exists(p) else None


def matches(labels, selector):
    k, v = selector.split("=", 1)
    return labels.get(k) == v


def get_jobs(flags):
    items = []
    for f in sorted(os.listdir(path("jobs")) if os.path.isdir(path("jobs")) else []):
        if not f.endswith(".json"):
            continue
        name = f[:-5]
        job = load("jobs", name)
        if not matches(job["metadata"].get("labels", {}), flags["--selector"]):
            continue
        end = end_of(name)
        runner = int(open(path("jobs", name + ".runner")).read())
        deleting = os.path.exists(path("jobs", name + ".deleting"))
        if deleting and (end is not None or not alive(runner)):
            # Its pod is gone: so is the Job.
            for suffix in (".json", ".end", ".runner", ".deleting", ".force"):
                if os.path.exists(path("jobs", name + suffix)):
                    os.remove(path("jobs", name + suffix))
            continue
        meta = {"name": name, "namespace": job["metadata"].get("namespace", "default"),
                "labels": job["metadata"].get("labels", {})}
        if deleting:
            meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
        status = {}
        if end is None:
            status["active"] = 1
        elif end["exitCode"] == 0:
            status.update(succeeded=1, conditions=[{"type": "Complete", "status": "True"}])
        else:
            status.update(failed=1, conditions=[{
                "type": "Failed", "status": "True", "reason": end["jobReason"],
                "message": "Job has reached the specified backoff limit"}])
        items.append({"apiVersion": "batch/v1", "kind": "Job", "metadata": meta,
                      "status": status})
    print(json.dumps({"apiVersion": "v1", "kind": "List", "items": items}))


def get_pods(flags):
    name = flags["--selector"].split("=", 1)[1]
    items = []
    if load("jobs", name) is not None:
        end = end_of(name)
        state = ({"terminated": {"exitCode": end["exitCode"], "reason": end["reason"]}}
                 if end else {"running": {"startedAt": "2026-01-01T00:00:00Z"}})
        items.append({"apiVersion": "v1", "kind": "Pod",
                      "metadata": {"name": name + "-pod", "labels": {"job-name": name}},
                      "status": {"containerStatuses": [{"name": "job", "state": state}]}})
    print(json.dumps({"apiVersion": "v1", "kind": "List", "items": items}))


def delete(pos, flags):
    what = pos[1]
    if what == "pods":
        name = flags["--selector"].split("=", 1)[1]
        if load("jobs", name) is not None:
            open(path("jobs", name + ".force"), "w").close()
        return
    name = pos[2]
    kind = "jobs" if what == "job" else "secrets"
    if load(kind, name) is None:
        if flags.get("--ignore-not-found") == "true":
            return
        fail(f'{what}s "{name}" not found')
    if kind == "secrets":
        os.remove(path("secrets", name + ".json"))
    else:
        open(path("jobs", name + ".deleting"), "w").close()
    print(f"{what} \"{name}\" deleted")


def main():
    args = sys.argv[1:]
    if args[:1] == ["_run"]:
        run_pod(args[1])
        return
    if not STATE:
        fail("KUBECTL_STANDIN_STATE is not set")
    os.makedirs(STATE, exist_ok=True)
    with open(path("calls.log"), "a") as f:
        f.write(json.dumps(args) + "\n")
    pos, flags = parse(args)
    if not pos:
        fail("no verb")
    check_flags_with_real_kubectl(pos[0], flags)
    if os.environ.get("KUBECTL_STANDIN_FAIL") == pos[0]:
        fail("Unable to connect to the server: dial tcp 10.0.0.1:6443: connect: no route to host")
    if pos[0] == "apply":
        apply(flags)
    elif pos[:2] == ["get", "jobs"]:
        get_jobs(flags)
    elif pos[:2] == ["get", "pods"]:
        get_pods(flags)
    elif pos[0] == "delete":
        delete(pos, flags)
    else:
        fail(f"the stand-in does not take: {' '.join(args)}")


if __name__ == "__main__":
    main()
