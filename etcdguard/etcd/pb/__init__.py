"""Generated etcd v3 gRPC stubs (see regenerate.py). Do not edit by hand."""
