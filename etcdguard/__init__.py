"""etcdguard: encrypted, verified etcd backups and disaster recovery."""

__version__ = "0.1.0"
