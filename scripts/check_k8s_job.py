#!/usr/bin/env python3
"""Checks Kubernetes batch/v1 Job manifests (`dlsys jobs render`, src/jobs/k8s_job.h) offline.

No cluster runs here, so `kubectl create --dry-run=client` cannot fetch the API's schema; this is
the equivalent check, against the fields of the Kubernetes API reference (v1.29) for the
objects a Job manifest uses: every field is one the API defines, of its type (a map of strings,
an integer, a list of objects, ...), and the values the API validates are valid: names are
DNS-1123 labels, label keys and values are label syntax, environment names are C identifiers,
restartPolicy is Never or OnFailure (a Job's), quantities parse, a container mounts only
volumes the pod declares, and the selector-free template has the labels.

  check_k8s_job.py FILE...     check manifests (- reads stdin); exit 1 naming every problem
  check_k8s_job.py --self-test show that broken manifests are refused
"""
import copy
import re
import sys

import yaml

STR, INT, BOOL = "string", "integer", "boolean"
STR_MAP = {"map": STR}  # map[string]string


def obj(**fields):
    return {"object": fields}


def lst(item):
    return {"list": item}


QUANTITY = re.compile(r"^([+-]?[0-9.]+)([eE][+-]?[0-9]+|[numkMGTPE]|[KMGTPE]i)?$")
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?$")
LABEL_KEY = re.compile(r"^([a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")

OBJECT_META = obj(name=STR, namespace=STR, labels=STR_MAP, annotations=STR_MAP,
                  generateName=STR)
RESOURCES = obj(limits={"map": "quantity"}, requests={"map": "quantity"},
                claims=lst(obj(name=STR)))
ENV_VAR = obj(name=STR, value=STR, valueFrom=obj(
    secretKeyRef=obj(name=STR, key=STR, optional=BOOL),
    configMapKeyRef=obj(name=STR, key=STR, optional=BOOL),
    fieldRef=obj(fieldPath=STR, apiVersion=STR)))
VOLUME_MOUNT = obj(name=STR, mountPath=STR, readOnly=BOOL, subPath=STR, subPathExpr=STR,
                   mountPropagation=STR)
CONTAINER = obj(name=STR, image=STR, command=lst(STR), args=lst(STR), workingDir=STR,
                env=lst(ENV_VAR), resources=RESOURCES, volumeMounts=lst(VOLUME_MOUNT),
                imagePullPolicy=STR, ports=lst(obj(name=STR, containerPort=INT, protocol=STR)),
                securityContext=obj(runAsUser=INT, runAsGroup=INT, runAsNonRoot=BOOL,
                                    readOnlyRootFilesystem=BOOL,
                                    allowPrivilegeEscalation=BOOL),
                terminationMessagePath=STR, terminationMessagePolicy=STR)
VOLUME = obj(name=STR,
             persistentVolumeClaim=obj(claimName=STR, readOnly=BOOL),
             emptyDir=obj(medium=STR, sizeLimit="quantity"),
             configMap=obj(name=STR, optional=BOOL, defaultMode=INT),
             secret=obj(secretName=STR, optional=BOOL, defaultMode=INT))
POD_SPEC = obj(containers=lst(CONTAINER), initContainers=lst(CONTAINER), restartPolicy=STR,
               volumes=lst(VOLUME), nodeSelector=STR_MAP, serviceAccountName=STR,
               terminationGracePeriodSeconds=INT, activeDeadlineSeconds=INT,
               priorityClassName=STR, securityContext=obj(runAsUser=INT, runAsGroup=INT,
                                                          fsGroup=INT, runAsNonRoot=BOOL),
               tolerations=lst(obj(key=STR, operator=STR, value=STR, effect=STR,
                                   tolerationSeconds=INT)))
JOB = obj(apiVersion=STR, kind=STR, metadata=OBJECT_META, spec=obj(
    template=obj(metadata=OBJECT_META, spec=POD_SPEC), backoffLimit=INT,
    activeDeadlineSeconds=INT, ttlSecondsAfterFinished=INT, completions=INT, parallelism=INT,
    suspend=BOOL, completionMode=STR, manualSelector=BOOL, podReplacementPolicy=STR,
    backoffLimitPerIndex=INT, maxFailedIndexes=INT))


def check_shape(v, schema, path, errors):
    if schema == STR:
        if not isinstance(v, str):
            errors.append(f"{path}: must be a string, got {type(v).__name__} {v!r}")
    elif schema == INT:
        if not isinstance(v, int) or isinstance(v, bool):
            errors.append(f"{path}: must be an integer, got {v!r}")
    elif schema == BOOL:
        if not isinstance(v, bool):
            errors.append(f"{path}: must be true or false, got {v!r}")
    elif schema == "quantity":
        if not isinstance(v, (str, int)) or not QUANTITY.match(str(v)):
            errors.append(f"{path}: '{v}' is not a quantity (e.g. 2, 500m, 512Mi)")
    elif "map" in schema:
        if not isinstance(v, dict):
            errors.append(f"{path}: must be a mapping")
            return
        for k, x in v.items():
            check_shape(x, schema["map"], f"{path}.{k}", errors)
    elif "list" in schema:
        if not isinstance(v, list):
            errors.append(f"{path}: must be a list")
            return
        for i, x in enumerate(v):
            check_shape(x, schema["list"], f"{path}[{i}]", errors)
    else:
        if not isinstance(v, dict):
            errors.append(f"{path}: must be an object")
            return
        for k, x in v.items():
            if k not in schema["object"]:
                errors.append(f"{path}: unknown field '{k}'")
            else:
                check_shape(x, schema["object"][k], f"{path}.{k}" if path else k, errors)


SECRET = obj(apiVersion=STR, kind=STR, metadata=OBJECT_META, type=STR, stringData=STR_MAP,
             data=STR_MAP, immutable=BOOL)


def check_secret(doc, where):
    """A v1 Secret (an attempt's token, KubernetesExecutor)."""
    errors = []
    check_shape(doc, SECRET, "", errors)
    if doc.get("apiVersion") != "v1":
        errors.append("apiVersion must be v1 for a Secret")
    name = str((doc.get("metadata") or {}).get("name", ""))
    if not DNS_LABEL.match(name):
        errors.append(f"metadata.name '{name}' is not a DNS-1123 label")
    return [f"{where}: {e}" for e in errors]


def check_job(doc, where):
    errors = []
    if not isinstance(doc, dict):
        return [f"{where}: not a mapping"]
    check_shape(doc, JOB, "", errors)
    if doc.get("apiVersion") != "batch/v1" or doc.get("kind") != "Job":
        errors.append("apiVersion/kind must be batch/v1 Job")
    meta = doc.get("metadata") or {}
    if not DNS_LABEL.match(str(meta.get("name", ""))):
        errors.append(f"metadata.name '{meta.get('name')}' is not a DNS-1123 label")
    spec = doc.get("spec") or {}
    template = spec.get("template") or {}
    for m, at in ((meta, "metadata"), (template.get("metadata") or {}, "spec.template.metadata")):
        for k, v in (m.get("labels") or {}).items():
            if not LABEL_KEY.match(str(k)):
                errors.append(f"{at}.labels: key '{k}' is not a label key")
            if not isinstance(v, str) or not LABEL_VALUE.match(v):
                errors.append(f"{at}.labels.{k}: '{v}' is not a label value")
    for f in ("backoffLimit", "activeDeadlineSeconds", "ttlSecondsAfterFinished"):
        if isinstance(spec.get(f), int) and spec[f] < (1 if f == "activeDeadlineSeconds" else 0):
            errors.append(f"spec.{f} is out of range: {spec[f]}")
    pod = template.get("spec") or {}
    if pod.get("restartPolicy") not in ("Never", "OnFailure"):
        errors.append(f"spec.template.spec.restartPolicy must be Never or OnFailure for a Job, "
                      f"got {pod.get('restartPolicy')!r}")
    containers = pod.get("containers") or []
    if not containers:
        errors.append("spec.template.spec.containers: a pod needs a container")
    volumes = {v.get("name") for v in pod.get("volumes") or [] if isinstance(v, dict)}
    for i, c in enumerate(containers):
        if not isinstance(c, dict):
            continue
        at = f"spec.template.spec.containers[{i}]"
        if not DNS_LABEL.match(str(c.get("name", ""))):
            errors.append(f"{at}.name '{c.get('name')}' is not a DNS-1123 label")
        if not c.get("image"):
            errors.append(f"{at}.image is required")
        for e in c.get("env") or []:
            if isinstance(e, dict) and not ENV_NAME.match(str(e.get("name", ""))):
                errors.append(f"{at}.env: '{e.get('name')}' is not a valid variable name")
        for m in c.get("volumeMounts") or []:
            if isinstance(m, dict) and m.get("name") not in volumes:
                errors.append(f"{at}.volumeMounts: '{m.get('name')}' is not a volume of the pod")
            if isinstance(m, dict) and not str(m.get("mountPath", "")).startswith("/"):
                errors.append(f"{at}.volumeMounts: mountPath must be absolute")
    return [f"{where}: {e}" for e in errors]


def load(path):
    text = sys.stdin.read() if path == "-" else open(path, encoding="utf-8").read()
    return [d for d in yaml.safe_load_all(text) if d is not None]


def self_test():
    good = yaml.safe_load("""
apiVersion: batch/v1
kind: Job
metadata: {name: dlsys-job-7, namespace: default, labels: {dlsys.io/job-id: "7"}}
spec:
  backoffLimit: 2
  template:
    metadata: {labels: {dlsys.io/job-id: "7"}}
    spec:
      restartPolicy: Never
      containers:
        - name: job
          image: dlsys:latest
          command: ["dlsys", "train"]
          env: [{name: DLSYS_JOB_ID, value: "7"}]
          resources: {requests: {cpu: "2", memory: 512Mi}, limits: {cpu: "2", memory: 512Mi}}
          volumeMounts: [{name: data, mountPath: /data}]
      volumes: [{name: data, persistentVolumeClaim: {claimName: dlsys-data}}]
""")
    assert not check_job(good, "good"), check_job(good, "good")
    pod = lambda d: d["spec"]["template"]["spec"]  # noqa: E731
    cases = {
        "unknown field": lambda d: d["spec"].update(backofLimit=2),
        "label value an integer": lambda d: d["metadata"]["labels"].update({"dlsys.io/job-id": 7}),
        "restartPolicy Always": lambda d: pod(d).update(restartPolicy="Always"),
        "cpu not a quantity": lambda d: pod(d)["containers"][0]["resources"]["limits"].update(
            cpu="two"),
        "mount of a missing volume": lambda d: pod(d)["containers"][0]["volumeMounts"][0].update(
            name="other"),
        "env value a number": lambda d: pod(d)["containers"][0]["env"][0].update(value=7),
        "name with capitals": lambda d: d["metadata"].update(name="Job-7"),
        "command not a list": lambda d: pod(d)["containers"][0].update(command="dlsys train"),
        "no containers": lambda d: pod(d).update(containers=[]),
        "backoffLimit a string": lambda d: d["spec"].update(backoffLimit="2"),
    }
    for what, edit in cases.items():
        d = copy.deepcopy(good)
        edit(d)
        if not check_job(d, what):
            print(f"check_k8s_job self-test: '{what}' was not refused")
            return 1
    print(f"check_k8s_job self-test: {len(cases)} broken variants refused")
    return 0


def main(argv):
    if argv[1:2] == ["--self-test"]:
        return self_test()
    if len(argv) < 2:
        print(__doc__)
        return 2
    errors, jobs = [], 0
    for path in argv[1:]:
        try:
            docs = load(path)
        except (OSError, yaml.YAMLError) as e:
            errors.append(f"{path}: cannot read: {e}")
            continue
        for i, d in enumerate(docs):
            if isinstance(d, dict) and d.get("kind") == "Secret":
                errors += check_secret(d, f"{path} document {i + 1}")
                continue
            errors += check_job(d, f"{path} document {i + 1}")
            jobs += 1
    for e in errors:
        print(f"k8s job: {e}")
    if errors or not jobs:
        return 1
    print(f"k8s job: {jobs} Job manifest(s) use only the API's fields, with valid values")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
