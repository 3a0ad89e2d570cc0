#!/usr/bin/env python3
"""Checks the Kubernetes manifests under deploy/ (deploy/k8s/README.md).

Every *.yaml parses (python3-yaml) and every document has apiVersion, kind and metadata.name;
and the pieces fit together: each HorizontalPodAutoscaler targets a Deployment defined here, a
Pods metric it scales on is published by a Prometheus adapter rule (a ConfigMap's config.yaml)
and is a metric family dlsys exports (its name appears in src/serve/); a Deployment's selector
matches its pod labels; a Service selects a Deployment's pods and targets a port they declare;
probes name declared ports; pods run as a ServiceAccount defined here and a RoleBinding binds
one to a Role defined here.

  check_k8s.py [ROOT]       check ROOT/deploy (ROOT: the repository, default: this script's)
  check_k8s.py --self-test  show that broken manifests are refused
"""
import copy
import pathlib
import sys

import yaml


def load(deploy_dir):
    """[(path, document)] for every YAML document under deploy_dir; parse errors are raised."""
    docs = []
    for p in sorted(pathlib.Path(deploy_dir).rglob("*.yaml")):
        with open(p, encoding="utf-8") as f:
            for d in yaml.safe_load_all(f):
                if d is not None:
                    docs.append((str(p), d))
    return docs


def exported_metrics(root):
    """Text of src/serve/*.cpp, where dlsys's serving metric families are written."""
    return "".join(p.read_text(encoding="utf-8")
                   for p in sorted(pathlib.Path(root, "src", "serve").glob("*.cpp")))


def check(docs, metrics_source):
    errors = []
    by_kind = {}
    for path, d in docs:
        where = f"{path}: {d.get('kind', '?')} {d.get('metadata', {}).get('name', '?')}" \
            if isinstance(d, dict) else path
        if not isinstance(d, dict):
            errors.append(f"{where}: a document is not a mapping")
            continue
        for key in ("apiVersion", "kind"):
            if not isinstance(d.get(key), str) or not d[key]:
                errors.append(f"{where}: no {key}")
        if not isinstance(d.get("metadata"), dict) or not d["metadata"].get("name"):
            errors.append(f"{where}: no metadata.name")
            continue
        by_kind.setdefault(d.get("kind"), []).append((where, d))

    deployments = {d["metadata"]["name"]: (w, d) for w, d in by_kind.get("Deployment", [])}
    pod_labels = {}
    pod_ports = {}
    for name, (where, d) in deployments.items():
        spec = d.get("spec", {})
        labels = spec.get("template", {}).get("metadata", {}).get("labels", {}) or {}
        selector = spec.get("selector", {}).get("matchLabels", {}) or {}
        if not selector or any(labels.get(k) != v for k, v in selector.items()):
            errors.append(f"{where}: spec.selector.matchLabels {selector} does not match the pod "
                          f"labels {labels}")
        pod_labels[name] = labels
        ports = set()
        containers = spec.get("template", {}).get("spec", {}).get("containers", []) or []
        if not containers:
            errors.append(f"{where}: no containers")
        for c in containers:
            for p in c.get("ports", []) or []:
                ports.add(p.get("name"))
                ports.add(p.get("containerPort"))
            for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
                port = (c.get(probe) or {}).get("httpGet", {}).get("port")
                if probe in c and port not in ports:
                    errors.append(f"{where}: {probe} uses port {port!r}, which the container "
                                  f"does not declare")
        pod_ports[name] = ports

    # Service accounts: a Deployment's pods run as one defined here; a RoleBinding binds an
    # account and a Role defined here.
    accounts = {d["metadata"]["name"] for _, d in by_kind.get("ServiceAccount", [])}
    roles = {d["metadata"]["name"] for _, d in by_kind.get("Role", [])}
    for name, (where, d) in deployments.items():
        sa = d.get("spec", {}).get("template", {}).get("spec", {}).get("serviceAccountName")
        if sa is not None and sa not in accounts:
            errors.append(f"{where}: serviceAccountName {sa!r} is no ServiceAccount here")
    for where, b in by_kind.get("RoleBinding", []):
        ref = b.get("roleRef") or {}
        if ref.get("kind") != "Role" or ref.get("name") not in roles:
            errors.append(f"{where}: roleRef {ref} is not a Role defined here")
        for subject in b.get("subjects") or []:
            if subject.get("kind") == "ServiceAccount" and subject.get("name") not in accounts:
                errors.append(f"{where}: subject {subject.get('name')!r} is no ServiceAccount "
                              f"here")

    for where, s in by_kind.get("Service", []):
        sel = s.get("spec", {}).get("selector", {}) or {}
        matched = [n for n, labels in pod_labels.items()
                   if sel and all(labels.get(k) == v for k, v in sel.items())]
        if not matched:
            errors.append(f"{where}: selector {sel} selects the pods of no Deployment here")
        for p in s.get("spec", {}).get("ports", []) or []:
            target = p.get("targetPort", p.get("port"))
            for n in matched:
                if target not in pod_ports[n]:
                    errors.append(f"{where}: targetPort {target!r} is not a port of Deployment {n}")

    adapter_metrics = set()
    for where, cm in by_kind.get("ConfigMap", []):
        for key, text in (cm.get("data") or {}).items():
            if not key.endswith((".yaml", ".yml")):
                continue
            try:
                conf = yaml.safe_load(text) or {}
            except yaml.YAMLError as e:
                errors.append(f"{where}: data.{key} is not YAML: {e}")
                continue
            for rule in conf.get("rules", []) or []:
                name = (rule.get("name") or {}).get("as")
                if not name or "<<.Series>>" not in rule.get("metricsQuery", ""):
                    errors.append(f"{where}: adapter rule {rule.get('seriesQuery')!r} needs "
                                  f"name.as and a metricsQuery over <<.Series>>")
                    continue
                if name not in rule.get("seriesQuery", ""):
                    errors.append(f"{where}: adapter rule publishes {name} but its seriesQuery "
                                  f"{rule.get('seriesQuery')!r} selects another series")
                adapter_metrics.add(name)

    for where, h in by_kind.get("HorizontalPodAutoscaler", []):
        if h.get("apiVersion") != "autoscaling/v2":
            errors.append(f"{where}: apiVersion {h.get('apiVersion')} (want autoscaling/v2)")
        spec = h.get("spec", {})
        ref = spec.get("scaleTargetRef", {})
        if ref.get("kind") != "Deployment" or ref.get("name") not in deployments:
            errors.append(f"{where}: scaleTargetRef {ref} is not a Deployment defined here")
        lo, hi = spec.get("minReplicas", 1), spec.get("maxReplicas")
        if not isinstance(hi, int) or hi < lo:
            errors.append(f"{where}: maxReplicas {hi} must be an integer >= minReplicas {lo}")
        metrics = spec.get("metrics", []) or []
        if not metrics:
            errors.append(f"{where}: no metrics")
        for m in metrics:
            if m.get("type") != "Pods":
                continue
            name = m.get("pods", {}).get("metric", {}).get("name")
            target = m.get("pods", {}).get("target", {})
            if target.get("type") != "AverageValue" or "averageValue" not in target:
                errors.append(f"{where}: Pods metric {name} needs an AverageValue target")
            if name not in adapter_metrics:
                errors.append(f"{where}: Pods metric {name} is published by no Prometheus "
                              f"adapter rule here (have {sorted(adapter_metrics)})")
            if f'"{name}' not in metrics_source:
                errors.append(f"{where}: Pods metric {name} is not a metric family dlsys "
                              f"exports (src/serve/)")
    return errors


def self_test(root):
    docs = load(pathlib.Path(root, "deploy"))
    source = exported_metrics(root)
    assert not check(docs, source), check(docs, source)

    def broken(edit):
        d = copy.deepcopy(docs)
        edit(d)
        return check(d, source)

    def find(d, kind):
        return next(doc for _, doc in d if doc.get("kind") == kind)

    cases = {
        "HPA targets a missing Deployment":
            lambda d: find(d, "HorizontalPodAutoscaler")["spec"]["scaleTargetRef"].update(
                name="nope"),
        "HPA metric without adapter rule":
            lambda d: find(d, "HorizontalPodAutoscaler")["spec"]["metrics"][0]["pods"]["metric"]
            .update(name="dlsys_serve_queue_dept"),
        "Service selects nothing":
            lambda d: find(d, "Service")["spec"].update(selector={"app": "other"}),
        "probe on an undeclared port":
            lambda d: find(d, "Deployment")["spec"]["template"]["spec"]["containers"][0]
            ["readinessProbe"]["httpGet"].update(port="metrics"),
        "no metadata.name": lambda d: find(d, "Service")["metadata"].pop("name"),
        "pods run as a missing account":
            lambda d: find(d, "Deployment")["spec"]["template"]["spec"].update(
                serviceAccountName="nobody"),
        "binding of a missing Role":
            lambda d: find(d, "RoleBinding")["roleRef"].update(name="nope"),
    }
    for what, edit in cases.items():
        errs = broken(edit)
        if not errs:
            print(f"check_k8s self-test: '{what}' was not refused")
            return 1
    try:
        list(yaml.safe_load_all("a: [1, 2\nb: c"))
        print("check_k8s self-test: malformed YAML parsed")
        return 1
    except yaml.YAMLError:
        pass
    print(f"check_k8s self-test: {len(cases) + 1} broken variants refused")
    return 0


def main(argv):
    here = pathlib.Path(__file__).resolve().parent.parent
    if argv[1:2] == ["--self-test"]:
        return self_test(here)
    root = pathlib.Path(argv[1]) if len(argv) > 1 else here
    try:
        docs = load(root / "deploy")
    except yaml.YAMLError as e:
        print(f"k8s: a manifest does not parse: {e}")
        return 1
    if not docs:
        print(f"k8s: no manifests under {root / 'deploy'}")
        return 1
    errors = check(docs, exported_metrics(root))
    for e in errors:
        print(f"k8s: {e}")
    if errors:
        return 1
    print(f"k8s: {len(docs)} manifests under deploy/ parse and fit together")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
