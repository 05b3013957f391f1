"""Consistency checks of rendered comfyfleet manifests that a schema cannot express.

Schema validation proves each object is well-formed on its own; this checks that the objects
agree with each other and with the coordinator's configuration: probes and Service ports name
ports the container has, selectors match the pod labels, the mounted TOML listens on the ports
the pod declares and keeps the journal on the volume, the ServiceMonitor (which has no schema
offline) points at a real port, and in the with-comfyui overlay the coordinator discovers the
StatefulSet's pods through its headless Service in the same namespace, on the pods' port.

Usage: manifests.py OVERLAY_NAME RENDERED.yaml
Prints one line per failed check and exits 1 if any failed.
"""

import sys
import tomllib
from urllib.parse import urlsplit

import yaml

KNOWN_KINDS = {
    ("v1", "Namespace"),
    ("v1", "ServiceAccount"),
    ("v1", "ConfigMap"),
    ("v1", "Service"),
    ("v1", "PersistentVolumeClaim"),
    ("apps/v1", "Deployment"),
    ("apps/v1", "StatefulSet"),
    ("policy/v1", "PodDisruptionBudget"),
    ("networking.k8s.io/v1", "NetworkPolicy"),
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
}


class Checker:
    def __init__(self, overlay, docs):
        self.overlay = overlay
        self.problems = []
        self.objects = {}
        for doc in docs:
            key = (doc.get("kind"), doc.get("metadata", {}).get("name"))
            self.objects[key] = doc
            if (doc.get("apiVersion"), doc.get("kind")) not in KNOWN_KINDS:
                self.fail(f"{key[0]} {key[1]}: unexpected apiVersion {doc.get('apiVersion')}")

    def fail(self, message):
        self.problems.append(f"{self.overlay}: {message}")

    def check(self, condition, message):
        if not condition:
            self.fail(message)
        return condition

    def get(self, kind, name):
        obj = self.objects.get((kind, name))
        if obj is None:
            self.fail(f"{kind} {name}: missing")
        return obj


def selector_matches(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def container_ports(container):
    return {p["name"]: p["containerPort"] for p in container.get("ports", [])}


def check_probe(c, container, kind, path):
    probe = container.get(kind)
    if not c.check(probe is not None, f"coordinator: {kind} missing"):
        return
    get = probe.get("httpGet", {})
    c.check(get.get("path") == path, f"coordinator: {kind} must GET {path}, not {get.get('path')}")
    c.check(get.get("port") == "http", f"coordinator: {kind} must use the http port")


def check_coordinator(c):
    deploy = c.get("Deployment", "comfyfleet")
    if deploy is None:
        return None
    spec = deploy["spec"]
    pod = spec["template"]["spec"]
    labels = spec["template"]["metadata"].get("labels", {})
    c.check(spec.get("replicas") == 1, "coordinator: exactly one replica owns the SQLite journal")
    c.check(spec.get("strategy", {}).get("type") == "Recreate",
            "coordinator: the Recreate strategy keeps two pods off one journal")
    c.check(selector_matches(spec["selector"]["matchLabels"], labels),
            "coordinator: Deployment selector does not match its pod labels")
    grace = pod.get("terminationGracePeriodSeconds", 30)
    c.check(10 <= grace <= 120, f"coordinator: terminationGracePeriodSeconds {grace} out of 10..120")
    c.check(pod.get("securityContext", {}).get("runAsNonRoot") is True, "coordinator: runAsNonRoot")
    # Service links put COMFYFLEET_* variables into the pod, the configuration's own prefix.
    c.check(pod.get("enableServiceLinks") is False, "coordinator: enableServiceLinks must be false")

    container = pod["containers"][0]
    ports = container_ports(container)
    c.check({"grpc", "http"} <= ports.keys(), "coordinator: container needs ports grpc and http")
    security = container.get("securityContext", {})
    c.check(security.get("readOnlyRootFilesystem") is True, "coordinator: readOnlyRootFilesystem")
    c.check(security.get("allowPrivilegeEscalation") is False, "coordinator: allowPrivilegeEscalation")
    check_probe(c, container, "livenessProbe", "/healthz")
    check_probe(c, container, "readinessProbe", "/readyz")
    c.check("memory" in container.get("resources", {}).get("limits", {}), "coordinator: memory limit")

    annotations = spec["template"]["metadata"].get("annotations", {})
    c.check(annotations.get("prometheus.io/scrape") == "true", "coordinator: prometheus.io/scrape")
    c.check(annotations.get("prometheus.io/port") == str(ports.get("http")),
            "coordinator: prometheus.io/port must be the http container port")

    # The configuration file the pod mounts, and that it agrees with the pod.
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    mounts = {m["name"]: m["mountPath"] for m in container.get("volumeMounts", [])}
    args = container.get("args", [])
    config_path = args[args.index("--config") + 1] if "--config" in args else None
    config_volume = next((n for n, p in mounts.items()
                          if config_path and config_path.startswith(p + "/")), None)
    if c.check(config_volume in volumes and "configMap" in volumes[config_volume],
               f"coordinator: --config {config_path} is not on a mounted ConfigMap"):
        cm = c.get("ConfigMap", volumes[config_volume]["configMap"]["name"])
        file_name = config_path.rsplit("/", 1)[1]
        if cm is not None and c.check(file_name in cm.get("data", {}),
                                      f"ConfigMap {cm['metadata']['name']}: no {file_name}"):
            config = tomllib.loads(cm["data"][file_name])
            for key, port in (("grpc_listen", "grpc"), ("http_listen", "http")):
                listen = config.get(key, "")
                c.check(listen == f"0.0.0.0:{ports.get(port)}",
                        f"configuration: {key} {listen!r} must be 0.0.0.0:{ports.get(port)}")
            data_dir = config.get("data_dir")
            c.check(data_dir in mounts.values() and
                    any(mounts[n] == data_dir and "persistentVolumeClaim" in volumes.get(n, {})
                        for n in mounts),
                    f"configuration: data_dir {data_dir!r} is not the mounted journal volume")
            return config, labels, ports
    return None


def check_service(c, labels, ports):
    svc = c.get("Service", "comfyfleet")
    if svc is None:
        return
    c.check(selector_matches(svc["spec"].get("selector"), labels),
            "Service comfyfleet: selector does not match the coordinator pods")
    names = {p["name"]: p for p in svc["spec"]["ports"]}
    c.check(set(names) == {"grpc", "http"}, "Service comfyfleet: ports must be named grpc and http")
    for name, port in names.items():
        c.check(port.get("targetPort") in ports, f"Service comfyfleet: port {name} targets no container port")

    for kind in ("PodDisruptionBudget", "NetworkPolicy"):
        obj = c.get(kind, "comfyfleet")
        if obj is not None:
            selector = obj["spec"].get("selector", obj["spec"].get("podSelector", {}))
            c.check(selector_matches(selector.get("matchLabels"), labels),
                    f"{kind} comfyfleet: selector does not match the coordinator pods")

    monitor = c.get("ServiceMonitor", "comfyfleet")
    if monitor is not None:
        c.check(selector_matches(monitor["spec"]["selector"].get("matchLabels"),
                                 svc["metadata"].get("labels", {})),
                "ServiceMonitor comfyfleet: selector does not match the Service labels")
        endpoints = monitor["spec"].get("endpoints", [])
        c.check(bool(endpoints), "ServiceMonitor comfyfleet: no endpoints")
        for endpoint in endpoints:
            c.check(endpoint.get("port") in names, f"ServiceMonitor: port {endpoint.get('port')} not on the Service")
            c.check(endpoint.get("path", "/metrics") == "/metrics", "ServiceMonitor: path must be /metrics")
            unknown = set(endpoint) - {"port", "path", "interval", "scrapeTimeout", "scheme",
                                       "honorLabels", "relabelings", "metricRelabelings"}
            c.check(not unknown, f"ServiceMonitor: unexpected endpoint keys {sorted(unknown)}")


def check_comfyui(c, config, coordinator_labels):
    sts = c.get("StatefulSet", "comfyui")
    if sts is None:
        return
    spec = sts["spec"]
    pod_labels = spec["template"]["metadata"].get("labels", {})
    c.check(selector_matches(spec["selector"]["matchLabels"], pod_labels),
            "StatefulSet comfyui: selector does not match its pod labels")
    headless = c.get("Service", spec["serviceName"])
    if headless is not None:
        c.check(headless["spec"].get("clusterIP") == "None",
                f"Service {spec['serviceName']}: must be headless for stable pod names")
        c.check(selector_matches(headless["spec"].get("selector"), pod_labels),
                f"Service {spec['serviceName']}: selector does not match the ComfyUI pods")
    container = spec["template"]["spec"]["containers"][0]
    resources = container.get("resources", {})
    c.check(str(resources.get("requests", {}).get("nvidia.com/gpu")) == "1" and
            str(resources.get("limits", {}).get("nvidia.com/gpu")) == "1",
            "StatefulSet comfyui: each pod requests and is limited to one nvidia.com/gpu")
    port = container_ports(container).get("http")

    check_discovery(c, config, sts, headless, port)

    # The coordinator may reach the ComfyUI pods, and only the coordinator may.
    policy = c.get("NetworkPolicy", "comfyfleet")
    if policy is not None:
        c.check(any(selector_matches(peer.get("podSelector", {}).get("matchLabels"), pod_labels)
                    for rule in policy["spec"].get("egress", []) for peer in rule.get("to", [])),
                "NetworkPolicy comfyfleet: no egress rule reaches the ComfyUI pods")
    guard = c.get("NetworkPolicy", "comfyui")
    if guard is not None:
        c.check(selector_matches(guard["spec"]["podSelector"].get("matchLabels"), pod_labels),
                "NetworkPolicy comfyui: selector does not match the ComfyUI pods")
        peers = [peer for rule in guard["spec"].get("ingress", []) for peer in rule.get("from", [])]
        c.check(peers and all(selector_matches(p.get("podSelector", {}).get("matchLabels"),
                                               coordinator_labels) for p in peers),
                "NetworkPolicy comfyui: only the coordinator may reach ComfyUI")


def check_discovery(c, config, sts, headless, port):
    """The coordinator finds the StatefulSet's pods by resolving its headless Service."""
    spec = sts["spec"]
    service = spec["serviceName"]
    namespace = sts["metadata"].get("namespace")
    # The short name resolves through the pod's search path only within the same namespace.
    same_namespace = headless is None or headless["metadata"].get("namespace") == namespace
    c.check(same_namespace, f"Service {service}: must be in the StatefulSet's namespace {namespace}")
    names = {service}
    if namespace:
        names |= {f"{service}.{namespace}", f"{service}.{namespace}.svc"}
    sources = config.get("discovery", {}).get("sources", [])
    matching = [s for s in sources
                if s.get("host") in names or
                (namespace and str(s.get("host", "")).startswith(f"{service}.{namespace}.svc."))]
    c.check(len(matching) == 1,
            f"configuration: exactly one [[discovery.sources]] must resolve the headless Service "
            f"{service} of namespace {namespace} (one of {sorted(names)}), found {len(matching)}")
    for source in matching:
        name = source.get("name", "")
        c.check(source.get("port", 8188) == port,
                f"configuration: discovery source {name} must use the pods' port {port}")
        c.check(source.get("scheme", "http") == "http",
                f"configuration: discovery source {name}: ComfyUI serves plain http")
        if headless is not None:
            ports = [p.get("port") for p in headless["spec"].get("ports", [])]
            c.check(port in ports, f"Service {service}: does not publish port {port}")
            c.check(headless["spec"].get("publishNotReadyAddresses") is not True,
                    f"Service {service}: publishNotReadyAddresses would hide terminating pods "
                    f"from discovery, so they could not be drained")
    # A static entry for a pod as well would run two nodes against one server.
    nodes = config.get("nodes", [])
    c.check(not any(service in (urlsplit(n["url"]).hostname or "").split(".") for n in nodes),
            "configuration: [[nodes]] must not list the ComfyUI pods that discovery finds")


def main():
    overlay, path = sys.argv[1], sys.argv[2]
    with open(path) as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    c = Checker(overlay, docs)
    found = check_coordinator(c)
    if found is not None:
        config, labels, ports = found
        check_service(c, labels, ports)
        if ("StatefulSet", "comfyui") in c.objects:
            check_comfyui(c, config, labels)
        elif overlay == "with-comfyui":
            c.fail("StatefulSet comfyui: missing")
    for problem in c.problems:
        print(problem)
    sys.exit(1 if c.problems else 0)


if __name__ == "__main__":
    main()
