"""etcdguard serve: scheduler, leader election, HTTP endpoints, the daemon loop."""
