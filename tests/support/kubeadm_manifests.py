"""The YAML documents of a generated kubeadm node (see :mod:`tests.support.kubeadm`), shaped after
kubeadm's own generators: the etcd and kube-apiserver static pods, the EncryptionConfiguration and
the InitConfiguration + ClusterConfiguration."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import yaml

if TYPE_CHECKING:
    from tests.support.kubeadm import KubeadmNode

ENCRYPTION_KEY_NAME = "key1"


def etcd_pod(node: KubeadmNode, command: list[str], image: str, extra_flags: list[str]) -> dict[str, Any]:
    pki, data = str(node.etcd_pki_dir), str(node.etcd_data_dir)
    listen_clients = [f"https://127.0.0.1:{node.client_port}"]
    if node.ip != "127.0.0.1":
        listen_clients.append(node.advertise_client_url)
    flags = [
        f"--advertise-client-urls={node.advertise_client_url}",
        f"--cert-file={pki}/server.crt",
        "--client-cert-auth=true",
        f"--data-dir={data}",
        "--experimental-initial-corrupt-check=true",
        "--experimental-watch-progress-notify-interval=5s",
        f"--initial-advertise-peer-urls={node.peer_url}",
        f"--initial-cluster={node.initial_cluster}",
        f"--key-file={pki}/server.key",
        f"--listen-client-urls={','.join(listen_clients)}",
        f"--listen-metrics-urls=http://127.0.0.1:{node.metrics_port}",
        f"--listen-peer-urls={node.peer_url}",
        f"--name={node.name}",
        f"--peer-cert-file={pki}/peer.crt",
        "--peer-client-cert-auth=true",
        f"--peer-key-file={pki}/peer.key",
        f"--peer-trusted-ca-file={pki}/ca.crt",
        "--snapshot-count=10000",
        f"--trusted-ca-file={pki}/ca.crt",
        *extra_flags,
    ]
    mounts = [{"mountPath": data, "name": "etcd-data"}, {"mountPath": pki, "name": "etcd-certs"}]
    volumes = [{"hostPath": {"path": pki, "type": "DirectoryOrCreate"}, "name": "etcd-certs"},
               {"hostPath": {"path": data, "type": "DirectoryOrCreate"}, "name": "etcd-data"}]
    if node.etcd_wal_dir is not None:  # a WAL on its own disk: --wal-dir and its own hostPath volume
        wal = str(node.etcd_wal_dir)
        flags.insert(flags.index(f"--trusted-ca-file={pki}/ca.crt") + 1, f"--wal-dir={wal}")
        mounts.append({"mountPath": wal, "name": "etcd-wal"})
        volumes.append({"hostPath": {"path": wal, "type": "DirectoryOrCreate"}, "name": "etcd-wal"})

    def probe(path: str, threshold: int) -> dict[str, Any]:
        return {"failureThreshold": threshold,
                "httpGet": {"host": "127.0.0.1", "path": path, "port": node.metrics_port, "scheme": "HTTP"},
                "initialDelaySeconds": 10, "periodSeconds": 10, "timeoutSeconds": 15}

    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "annotations": {"kubeadm.kubernetes.io/etcd.advertise-client-urls": node.advertise_client_url},
            "creationTimestamp": None,
            "labels": {"component": "etcd", "tier": "control-plane"},
            "name": "etcd", "namespace": "kube-system",
        },
        "spec": {
            "containers": [{
                "command": [*command, *flags],
                "image": image, "imagePullPolicy": "IfNotPresent",
                "livenessProbe": probe("/health?exclude=NOSPACE&serializable=true", 8),
                "name": "etcd",
                "resources": {"requests": {"cpu": "100m", "memory": "100Mi"}},
                "startupProbe": probe("/health?serializable=false", 24),
                "volumeMounts": mounts,
            }],
            "hostNetwork": True,
            "priority": 2000001000,
            "priorityClassName": "system-node-critical",
            "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
            "volumes": volumes,
        },
        "status": {},
    }


def apiserver_pod(node: KubeadmNode, command: list[str], etcd_servers: list[str],
                        image: str) -> dict[str, Any]:
    pki, enc_dir = str(node.pki_dir), str(node.encryption_config.parent)
    flags = [
        f"--advertise-address={node.ip}",
        "--allow-privileged=true",
        "--authorization-mode=Node,RBAC",
        f"--client-ca-file={pki}/ca.crt",
        "--enable-admission-plugins=NodeRestriction",
        "--enable-bootstrap-token-auth=true",
        f"--encryption-provider-config={node.encryption_config}",
        f"--etcd-cafile={pki}/etcd/ca.crt",
        f"--etcd-certfile={pki}/apiserver-etcd-client.crt",
        f"--etcd-keyfile={pki}/apiserver-etcd-client.key",
        f"--etcd-servers={','.join(etcd_servers)}",
        f"--kubelet-client-certificate={pki}/apiserver-kubelet-client.crt",
        f"--kubelet-client-key={pki}/apiserver-kubelet-client.key",
        "--kubelet-preferred-address-types=InternalIP,ExternalIP,Hostname",
        f"--proxy-client-cert-file={pki}/front-proxy-client.crt",
        f"--proxy-client-key-file={pki}/front-proxy-client.key",
        "--requestheader-allowed-names=front-proxy-client",
        f"--requestheader-client-ca-file={pki}/front-proxy-ca.crt",
        "--requestheader-extra-headers-prefix=X-Remote-Extra-",
        "--requestheader-group-headers=X-Remote-Group",
        "--requestheader-username-headers=X-Remote-User",
        f"--secure-port={node.apiserver_port}",
        "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
        f"--service-account-key-file={pki}/sa.pub",
        f"--service-account-signing-key-file={pki}/sa.key",
        "--service-cluster-ip-range=10.96.0.0/12",
        f"--tls-cert-file={pki}/apiserver.crt",
        f"--tls-private-key-file={pki}/apiserver.key",
    ]
    volumes = [("ca-certs", "/etc/ssl/certs", "DirectoryOrCreate"), ("k8s-certs", pki, "DirectoryOrCreate"),
               ("encryption-config", enc_dir, "DirectoryOrCreate")]
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "annotations": {"kubeadm.kubernetes.io/kube-apiserver.advertise-address.endpoint":
                            f"{node.ip}:{node.apiserver_port}"},
            "creationTimestamp": None,
            "labels": {"component": "kube-apiserver", "tier": "control-plane"},
            "name": "kube-apiserver", "namespace": "kube-system",
        },
        "spec": {
            "containers": [{
                "command": [*command, *flags],
                "image": image, "imagePullPolicy": "IfNotPresent",
                "livenessProbe": {"failureThreshold": 8, "httpGet": {
                    "host": node.ip, "path": "/livez", "port": node.apiserver_port, "scheme": "HTTPS"},
                    "initialDelaySeconds": 10, "periodSeconds": 10, "timeoutSeconds": 15},
                "name": "kube-apiserver",
                "resources": {"requests": {"cpu": "250m"}},
                "volumeMounts": [{"mountPath": p, "name": n, "readOnly": True} for n, p, _ in volumes],
            }],
            "hostNetwork": True,
            "priority": 2000001000,
            "priorityClassName": "system-node-critical",
            "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
            "volumes": [{"hostPath": {"path": p, "type": t}, "name": n} for n, p, t in volumes],
        },
        "status": {},
    }


def encryption_configuration(secret: str, kms_endpoint: str | None) -> dict[str, Any]:
    providers: list[dict[str, Any]] = [
        {"aescbc": {"keys": [{"name": ENCRYPTION_KEY_NAME, "secret": secret}]}}]
    if kms_endpoint:
        providers.append({"kms": {"apiVersion": "v2", "name": "test-kms", "endpoint": kms_endpoint,
                                  "timeout": "3s"}})
    providers.append({"identity": {}})
    return {"apiVersion": "apiserver.config.k8s.io/v1", "kind": "EncryptionConfiguration",
            "resources": [{"resources": ["secrets"], "providers": providers}]}


def kubeadm_configuration(node: KubeadmNode, version: str) -> str:
    init = {
        "apiVersion": "kubeadm.k8s.io/v1beta3", "kind": "InitConfiguration",
        "localAPIEndpoint": {"advertiseAddress": node.ip, "bindPort": node.apiserver_port},
        "nodeRegistration": {"name": node.name, "criSocket": "unix:///var/run/containerd/containerd.sock"},
    }
    cluster = {
        "apiVersion": "kubeadm.k8s.io/v1beta3", "kind": "ClusterConfiguration",
        "clusterName": "kubernetes",
        "kubernetesVersion": version,
        "certificatesDir": str(node.pki_dir),
        "controlPlaneEndpoint": f"{node.ip}:{node.apiserver_port}",
        "etcd": {"local": {"dataDir": str(node.etcd_data_dir),
                           "serverCertSANs": [node.name, node.ip], "peerCertSANs": [node.name, node.ip]}},
        "apiServer": {
            "certSANs": [node.ip],
            "extraArgs": {"encryption-provider-config": str(node.encryption_config)},
            "extraVolumes": [{"name": "encryption-config", "hostPath": str(node.encryption_config.parent),
                              "mountPath": str(node.encryption_config.parent), "readOnly": True,
                              "pathType": "DirectoryOrCreate"}],
        },
        "networking": {"dnsDomain": "cluster.local", "serviceSubnet": "10.96.0.0/12"},
    }
    if node.etcd_wal_dir is not None:
        cluster["etcd"]["local"]["extraArgs"] = {"wal-dir": str(node.etcd_wal_dir)}
    return yaml.safe_dump_all([init, cluster], sort_keys=False)
