"""Network namespaces for the distributed tests: "machines" on one host, each with an address
on a shared link, made and removed here (root and iproute2 needed)."""
import os
import subprocess
import tempfile
import time


def sh(*cmd, check=True):
    r = subprocess.run(cmd, capture_output=True, text=True)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {r.stderr.strip()}")
    return r


class Machines:
    """`n` namespaces NAMES[i] with address ADDRS[i] on interface IFS[i]. Two are joined by one
    veth pair; more by a bridge in a namespace of its own (the "switch"). `cut(i)` takes
    machine i's link down: no packet, no reset, its sockets stay open."""

    def __init__(self, tag, n, subnet):
        self.names = [f"dlsys-{tag}-{i}" for i in range(n)]
        self.ifs = [f"dl{tag}{i}" for i in range(n)]
        self.addrs = [f"{subnet}.{i + 1}" for i in range(n)]
        self.hub = f"dlsys-{tag}-hub" if n > 2 else None
        self.hub_ifs = [f"dl{tag}h{i}" for i in range(n)]

    def setup(self):
        for ns in self.names + ([self.hub] if self.hub else []):
            sh("ip", "netns", "add", ns)
        if self.hub is None:
            sh("ip", "link", "add", self.ifs[0], "type", "veth", "peer", "name", self.ifs[1])
        else:
            sh("ip", "-n", self.hub, "link", "add", "br0", "type", "bridge")
            sh("ip", "-n", self.hub, "link", "set", "br0", "up")
        for i, ns in enumerate(self.names):
            if self.hub is not None:
                sh("ip", "link", "add", self.ifs[i], "type", "veth", "peer", "name",
                   self.hub_ifs[i])
                sh("ip", "link", "set", self.hub_ifs[i], "netns", self.hub)
                sh("ip", "-n", self.hub, "link", "set", self.hub_ifs[i], "master", "br0")
                sh("ip", "-n", self.hub, "link", "set", self.hub_ifs[i], "up")
            sh("ip", "link", "set", self.ifs[i], "netns", ns)
            sh("ip", "-n", ns, "addr", "add", self.addrs[i] + "/24", "dev", self.ifs[i])
            sh("ip", "-n", ns, "link", "set", self.ifs[i], "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")

    def cut(self, i):
        sh("ip", "-n", self.names[i], "link", "set", self.ifs[i], "down")

    def teardown(self):
        for ns in self.names + ([self.hub] if self.hub else []):
            sh("ip", "netns", "del", ns, check=False)
        for name in self.ifs + self.hub_ifs:  # a veth not yet moved into its namespace
            sh("ip", "link", "del", name, check=False)


class Ranks:
    """`dlsys` processes started in the machines' namespaces, each writing to a file of its own
    (a full pipe would stall a rank: a false "hang")."""

    def __init__(self, folder):
        self.folder, self.procs, self.logs = folder, [], []

    def start(self, machine_ns, argv):
        log = open(os.path.join(self.folder, f"rank{len(self.procs)}.log"), "w+")
        self.logs.append(log)
        self.procs.append(subprocess.Popen(["ip", "netns", "exec", machine_ns] + argv,
                                           stdout=log, stderr=subprocess.STDOUT))

    def output(self, r):
        self.logs[r].flush()
        with open(self.logs[r].name) as f:
            return f.read()

    def wait_for_steps(self, r, steps, timeout_s=60):
        """True once rank r has reported `steps` step events (--json --log-every 1)."""
        deadline = time.monotonic() + timeout_s
        while self.output(r).count('"event":"step"') < steps:
            if self.procs[r].poll() is not None or time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True

    def kill_all(self):
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            p.wait()
        for log in self.logs:
            log.close()


def run_on(machines, body):
    """Makes the machines, runs body(ranks, tmp) and returns its exit code; 77 (skipped) without
    root or iproute2. The ranks are killed and the namespaces removed at the end, also after a
    failure."""
    if os.geteuid() != 0:
        print("skipped: network namespaces need root")
        return 77
    try:
        machines.setup()
    except (RuntimeError, FileNotFoundError) as e:
        machines.teardown()
        print(f"skipped: cannot make network namespaces here: {e}")
        return 77
    except BaseException:
        machines.teardown()
        raise
    with tempfile.TemporaryDirectory() as tmp:
        ranks = Ranks(tmp)
        try:
            return body(ranks, tmp)
        finally:
            ranks.kill_all()
            machines.teardown()


def digits_mlp_spec(path, shared, train):
    """Writes a spec training a small MLP on the digits to `path`; `train` is the train mapping's
    body (lines indented by two spaces). Returns `path`."""
    with open(path, "w") as f:
        f.write(f"data: {{train: {shared}/data/digits/digits.csv, feature_scale: 0.0625, "
                "validation_fraction: 0.2, split_seed: 0}\n"
                "model:\n  input: [64]\n  layers:\n    - linear: {out: 32}\n    - relu\n"
                "    - linear: {out: 10}\n"
                "train:\n" + train)
    return path
