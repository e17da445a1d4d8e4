"""The control-plane kit: what a rebuilt kubeadm control-plane node needs besides etcd's data.

The CAs and their keys, the service-account key pair, the apiserver's encryption configuration
and the key files it names, the static pod manifests and the kubeadm ClusterConfiguration, kept
beside the snapshots as one tar -> zstd -> age object with a signed manifest written last::

    <cluster>/kits/<kit-id>/kit.tar.zst.age
    <cluster>/kits/<kit-id>/manifest.json

Modules: :mod:`.model` (the manifest), :mod:`.collect` (reading the host), :mod:`.archive`
(tar, zstd, age both ways), :mod:`.record` (signing), :mod:`.catalog` (listing, trust, the kit
matching a snapshot), :mod:`.save`, :mod:`.restore`, :mod:`.expiry` (certificate expiry checks).
"""
